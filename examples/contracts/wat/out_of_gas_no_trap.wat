;; Hostile: spends more gas than it has without reaching a fuel check.
;; wasmtime checks fuel on function entry and at loop headers only, so a
;; straight-line body runs to its end even when it costs more than remains;
;; the runtime must still end the call with status out_of_gas.
;;
;;   burn  100 x (i32.const 1, drop) and no loop, call or host call: 101 fuel
;;         (1 per i32.const, 0 per drop, 1 for the call itself). Given
;;         between 2 and 100 fuel it still returns normally from wasm.
(module
  (memory (export "memory") 1)
  (func (export "burn")
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop
    i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop i32.const 1 drop))
