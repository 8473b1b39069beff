;; Key and value size limits (keys 1..256 bytes, values up to 65536 bytes).
;; Keys are runs of zero bytes from address 4096; values come from address 0.
;;
;;   big_key      storage_set with a 257-byte key          -> trapped
;;   big_key_get  storage_get with a 257-byte key          -> trapped
;;   empty_key    storage_set with a 0-byte key            -> trapped
;;   max_key      storage_set with a 256-byte key, then reads it back;
;;                returns the value "v"                    -> ok
;;   big_value    storage_set of a 65537-byte value        -> trapped
;;   max_value    storage_set of a 65536-byte value        -> ok
(module
  (import "env" "storage_get" (func $storage_get (param i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "read_register" (func $read_register (param i32)))
  (import "env" "return_data" (func $return_data (param i32 i32)))

  ;; Two pages, so that a 65537-byte value is in bounds.
  (memory (export "memory") 2)

  (data (i32.const 0) "v")

  (func (export "big_key")
    (call $storage_set (i32.const 4096) (i32.const 257) (i32.const 0) (i32.const 1)))

  (func (export "big_key_get")
    (drop (call $storage_get (i32.const 4096) (i32.const 257))))

  (func (export "empty_key")
    (call $storage_set (i32.const 4096) (i32.const 0) (i32.const 0) (i32.const 1)))

  (func (export "max_key")
    (local $len i32)
    (call $storage_set (i32.const 4096) (i32.const 256) (i32.const 0) (i32.const 1))
    (local.set $len (call $storage_get (i32.const 4096) (i32.const 256)))
    (call $read_register (i32.const 1024))
    (call $return_data (i32.const 1024) (local.get $len)))

  (func (export "big_value")
    (call $storage_set (i32.const 4096) (i32.const 1) (i32.const 0) (i32.const 65537)))

  (func (export "max_value")
    (call $storage_set (i32.const 4096) (i32.const 1) (i32.const 0) (i32.const 65536))))
