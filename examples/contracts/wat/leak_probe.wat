;; Hostile: detects state left over from an earlier call.
;;
;;   probe         if the marker at memory address 1024 or the mutable global
;;                 is nonzero, returns "dirty"; otherwise sets both and returns
;;                 "clean". Every call must return "clean".
;;   probe_memory  the same with the memory marker only
;;   probe_global  the same with the global only
(module
  (import "env" "return_data" (func $return_data (param i32 i32)))
  (memory (export "memory") 1)
  (global $marker (mut i32) (i32.const 0))

  (data (i32.const 0) "clean")
  (data (i32.const 8) "dirty")

  (func $answer (param $dirty i32)
    (if (local.get $dirty)
      (then (call $return_data (i32.const 8) (i32.const 5)))
      (else
        (i32.store (i32.const 1024) (i32.const 0x5AFE5AFE))
        (global.set $marker (i32.const 1))
        (call $return_data (i32.const 0) (i32.const 5)))))

  (func (export "probe")
    (call $answer (i32.or (i32.load (i32.const 1024)) (global.get $marker))))

  (func (export "probe_memory")
    (call $answer (i32.load (i32.const 1024))))

  (func (export "probe_global")
    (call $answer (global.get $marker))))
