;; Hostile: never returns. Only the gas limit stops it (status out_of_gas).
(module
  (memory (export "memory") 1)
  (func (export "spin")
    (loop $forever
      (br $forever))))
