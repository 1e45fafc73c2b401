;; badalloc's ef_alloc points past the end of its memory.
(module
  (memory (export "memory") 1)
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 65530))
  (func (export "ef_process") (param $ptr i32) (param $len i32) (result i64) (i64.const 0)))
