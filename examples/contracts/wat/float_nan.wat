;; Determinism: NaN bit patterns. 0.0 / 0.0 gives a NaN whose sign bit depends
;; on the CPU; with NaN canonicalisation every node returns the canonical NaN.
;;
;;   nan    f64 0.0 / 0.0, returned as its 8 bytes (LE): 00 00 00 00 00 00 f8 7f
;;   nan32  f32 0.0 / 0.0, returned as its 4 bytes (LE): 00 00 c0 7f
(module
  (import "env" "return_data" (func $return_data (param i32 i32)))
  (memory (export "memory") 1)

  ;; The operands are loaded from zeroed memory so nothing is folded at compile time.
  (func (export "nan")
    (i64.store (i32.const 0)
      (i64.reinterpret_f64 (f64.div (f64.load (i32.const 64)) (f64.load (i32.const 72)))))
    (call $return_data (i32.const 0) (i32.const 8)))

  (func (export "nan32")
    (i32.store (i32.const 0)
      (i32.reinterpret_f32 (f32.div (f32.load (i32.const 64)) (f32.load (i32.const 72)))))
    (call $return_data (i32.const 0) (i32.const 4))))
