;; Hostile: host calls with pointers outside memory and negative lengths.
;; Every method first stores "before" = "1", then makes one bad call, which must
;; trap the call (status trapped) and drop that write.
;;
;;   storage_set_oob_key    key pointer 0xFFFFFFF0
;;   storage_set_oob_value  value pointer 0xFFFFFFF0
;;   storage_get_oob_key    key pointer 0xFFFFFFF0
;;   read_register_oob      register (the 20-byte caller) copied to 0xFFFFFFF0
;;   read_register_edge     register copied to 65526: 10 bytes past the end
;;   return_data_oob        return_data at 0xFFFFFFF0
;;   emit_event_oob         event topic pointer 0xFFFFFFF0
;;   negative_key_len       storage_set with key length -1
;;   negative_value_len     storage_set with value length -1
;;   negative_return_len    return_data with length -1
(module
  (import "env" "read_register" (func $read_register (param i32)))
  (import "env" "caller" (func $caller (result i32)))
  (import "env" "storage_get" (func $storage_get (param i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "return_data" (func $return_data (param i32 i32)))
  (import "env" "emit_event" (func $emit_event (param i32 i32 i32 i32)))

  (memory (export "memory") 1)

  ;; 0: "before"; 8: "1"
  (data (i32.const 0) "before")
  (data (i32.const 8) "1")

  (func $before
    (call $storage_set (i32.const 0) (i32.const 6) (i32.const 8) (i32.const 1)))

  (func (export "storage_set_oob_key")
    (call $before)
    (call $storage_set (i32.const 0xFFFFFFF0) (i32.const 8) (i32.const 8) (i32.const 1)))

  (func (export "storage_set_oob_value")
    (call $before)
    (call $storage_set (i32.const 0) (i32.const 6) (i32.const 0xFFFFFFF0) (i32.const 8)))

  (func (export "storage_get_oob_key")
    (call $before)
    (drop (call $storage_get (i32.const 0xFFFFFFF0) (i32.const 8))))

  (func (export "read_register_oob")
    (call $before)
    (drop (call $caller))
    (call $read_register (i32.const 0xFFFFFFF0)))

  (func (export "read_register_edge")
    (call $before)
    (drop (call $caller))
    (call $read_register (i32.const 65526)))

  (func (export "return_data_oob")
    (call $before)
    (call $return_data (i32.const 0xFFFFFFF0) (i32.const 8)))

  (func (export "emit_event_oob")
    (call $before)
    (call $emit_event (i32.const 0xFFFFFFF0) (i32.const 4) (i32.const 0) (i32.const 0)))

  (func (export "negative_key_len")
    (call $before)
    (call $storage_set (i32.const 0) (i32.const -1) (i32.const 8) (i32.const 1)))

  (func (export "negative_value_len")
    (call $before)
    (call $storage_set (i32.const 0) (i32.const 6) (i32.const 8) (i32.const -1)))

  (func (export "negative_return_len")
    (call $before)
    (call $return_data (i32.const 0) (i32.const -1))))
