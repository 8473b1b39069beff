;; Hostile: imports a function the host does not provide. Deploying it must be
;; refused (status rejected); it never runs.
(module
  (import "env" "not_a_host_function" (func $missing (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "call")
    (drop (call $missing (i32.const 0) (i32.const 0)))))
