;; Hostile: memory exhaustion.
;;
;;   grow         memory.grow by one page until it fails (returns -1), then
;;                returns memory.size in pages as u32 LE: at most the page limit.
;;   grow_huge    one memory.grow of 65535 pages (4 GiB); returns its result
;;                as i32 LE (-1 when refused).
;;   huge_return  return_data(32768, 65536): a length within the return-size
;;                limit that runs past the end of the single page of memory.
(module
  (import "env" "return_data" (func $return_data (param i32 i32)))
  (memory (export "memory") 1)

  (func (export "grow")
    (block $refused
      (loop $more
        (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
    (i32.store (i32.const 0) (memory.size))
    (call $return_data (i32.const 0) (i32.const 4)))

  (func (export "grow_huge")
    (i32.store (i32.const 0) (memory.grow (i32.const 65535)))
    (call $return_data (i32.const 0) (i32.const 4)))

  (func (export "huge_return")
    (call $return_data (i32.const 32768) (i32.const 65536))))
