;; Per-account objects, for ownership: each account's object lives under the key
;; "obj/" + its 20-byte address, next to one shared key, "shared".
;;
;;   bump          ()                 -> u64 LE: adds 1 to the sender's object
;;                                       (a u64, 0 when absent) and returns it;
;;                                       reverts "not a counter" if the object
;;                                       is not 8 bytes
;;   put           data               -> nothing; the sender's object := data
;;   get           address (20 bytes) -> that account's object; reverts "none"
;;   poke          address + data     -> nothing; that account's object := data
;;   read_shared   ()                 -> the value of "shared" (empty when absent)
;;   write_shared  data               -> nothing; "shared" := data
;;   spin          ()                 -> never returns: ends out_of_gas
;;   fail          ()                 -> reverts "fail"
;;
;; Senders must be 20 bytes ("sender must be 20 bytes"); get and poke revert
;; "bad input" when the input is too short for an address.
(module
  (import "env" "read_register" (func $read_register (param i32)))
  (import "env" "input" (func $input (result i32)))
  (import "env" "caller" (func $caller (result i32)))
  (import "env" "storage_get" (func $storage_get (param i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "return_data" (func $return_data (param i32 i32)))
  (import "env" "revert" (func $revert (param i32 i32)))

  ;; Two pages: the input buffer at 1024 holds any input or value (64 KiB).
  (memory (export "memory") 2)

  ;; 0: the object key, "obj/" + address (24 bytes); 32: "shared" (6 bytes);
  ;; 40..: revert messages; 128: a u64; 1024: input and values.
  (data (i32.const 0) "obj/")
  (data (i32.const 32) "shared")
  (data (i32.const 40) "none")
  (data (i32.const 48) "bad input")
  (data (i32.const 64) "fail")
  (data (i32.const 72) "not a counter")
  (data (i32.const 96) "sender must be 20 bytes")

  ;; The key of the sender's own object.
  (func $own_key
    (if (i32.ne (call $caller) (i32.const 20))
      (then (call $revert (i32.const 96) (i32.const 23)) (unreachable)))
    (call $read_register (i32.const 4)))

  ;; Copy the input to 1024; return its length.
  (func $read_input (result i32)
    (local $n i32)
    (local.set $n (call $input))
    (call $read_register (i32.const 1024))
    (local.get $n))

  ;; The key of the account whose address starts the input (of length $n).
  (func $target_key (param $n i32)
    (if (i32.lt_u (local.get $n) (i32.const 20))
      (then (call $revert (i32.const 48) (i32.const 9)) (unreachable)))
    (i64.store (i32.const 4) (i64.load (i32.const 1024)))
    (i64.store (i32.const 12) (i64.load (i32.const 1032)))
    (i32.store (i32.const 20) (i32.load (i32.const 1040))))

  (func (export "bump")
    (local $n i32)
    (local $value i64)
    (call $own_key)
    (local.set $n (call $storage_get (i32.const 0) (i32.const 24)))
    (if (i32.ge_s (local.get $n) (i32.const 0))
      (then
        (if (i32.ne (local.get $n) (i32.const 8))
          (then (call $revert (i32.const 72) (i32.const 13)) (unreachable)))
        (call $read_register (i32.const 128))
        (local.set $value (i64.load (i32.const 128)))))
    (i64.store (i32.const 128) (i64.add (local.get $value) (i64.const 1)))
    (call $storage_set (i32.const 0) (i32.const 24) (i32.const 128) (i32.const 8))
    (call $return_data (i32.const 128) (i32.const 8)))

  (func (export "put")
    (local $n i32)
    (call $own_key)
    (local.set $n (call $read_input))
    (call $storage_set (i32.const 0) (i32.const 24) (i32.const 1024) (local.get $n)))

  (func (export "get")
    (local $n i32)
    (local.set $n (call $read_input))
    (if (i32.ne (local.get $n) (i32.const 20))
      (then (call $revert (i32.const 48) (i32.const 9)) (unreachable)))
    (call $target_key (local.get $n))
    (local.set $n (call $storage_get (i32.const 0) (i32.const 24)))
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (call $revert (i32.const 40) (i32.const 4)) (unreachable)))
    (call $read_register (i32.const 1024))
    (call $return_data (i32.const 1024) (local.get $n)))

  (func (export "poke")
    (local $n i32)
    (local.set $n (call $read_input))
    (call $target_key (local.get $n))
    (call $storage_set (i32.const 0) (i32.const 24)
      (i32.const 1044) (i32.sub (local.get $n) (i32.const 20))))

  (func (export "read_shared")
    (local $n i32)
    (local.set $n (call $storage_get (i32.const 32) (i32.const 6)))
    (if (i32.ge_s (local.get $n) (i32.const 0))
      (then
        (call $read_register (i32.const 1024))
        (call $return_data (i32.const 1024) (local.get $n)))))

  (func (export "write_shared")
    (local $n i32)
    (local.set $n (call $read_input))
    (call $storage_set (i32.const 32) (i32.const 6) (i32.const 1024) (local.get $n)))

  (func (export "spin")
    (loop $forever
      (br $forever)))

  (func (export "fail")
    (call $revert (i32.const 64) (i32.const 4))))
