;; Hostile: unbounded recursion. The wasm stack limit stops it (status trapped),
;; whatever the gas limit.
(module
  (memory (export "memory") 1)
  (func $down (param $depth i64) (result i64)
    ;; Not a tail call: the addition after the call keeps every frame alive.
    (i64.add
      (call $down (i64.add (local.get $depth) (i64.const 1)))
      (i64.const 1)))
  (func (export "recurse")
    (drop (call $down (i64.const 0)))))
