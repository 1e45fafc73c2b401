;; noprocess lacks the ef_process export.
(module
  (memory (export "memory") 1)
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 1024)))
