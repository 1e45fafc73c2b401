;; badsig's ef_process returns i32 instead of i64.
(module
  (memory (export "memory") 1)
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "ef_process") (param $ptr i32) (param $len i32) (result i32) (i32.const 0)))
