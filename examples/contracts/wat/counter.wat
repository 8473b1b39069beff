;; counter, written by hand: the Host ABI v1 at its plainest.
;; Same storage and results as counter.c: a u64 under the key "counter".
;;
;;   increment  ()  -> u64 LE, the new value
;;   get        ()  -> u64 LE, the current value (0 before the first increment)
;;   reset      ()  -> nothing; deletes the key
(module
  (import "env" "storage_get" (func $storage_get (param i32 i32) (result i32)))
  (import "env" "read_register" (func $read_register (param i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "storage_delete" (func $storage_delete (param i32 i32)))
  (import "env" "return_data" (func $return_data (param i32 i32)))
  (import "env" "revert" (func $revert (param i32 i32)))

  (memory (export "memory") 1)

  ;; 0: the key; 16: the 8-byte value buffer; 32: the overflow message.
  (data (i32.const 0) "counter")
  (data (i32.const 32) "counter overflow")

  ;; The stored value, or 0 when the key is absent (storage_get returns -1).
  (func $load (result i64)
    (if (result i64) (i32.lt_s (call $storage_get (i32.const 0) (i32.const 7)) (i32.const 0))
      (then (i64.const 0))
      (else
        (call $read_register (i32.const 16))
        (i64.load (i32.const 16)))))

  (func (export "increment")
    (local $value i64)
    (local.set $value (call $load))
    (if (i64.eq (local.get $value) (i64.const -1))
      (then (call $revert (i32.const 32) (i32.const 16)) (unreachable)))
    (i64.store (i32.const 16) (i64.add (local.get $value) (i64.const 1)))
    (call $storage_set (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 8))
    (call $return_data (i32.const 16) (i32.const 8)))

  (func (export "get")
    (i64.store (i32.const 16) (call $load))
    (call $return_data (i32.const 16) (i32.const 8)))

  (func (export "reset")
    (call $storage_delete (i32.const 0) (i32.const 7))))
