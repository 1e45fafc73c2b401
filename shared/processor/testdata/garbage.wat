;; garbage returns 8 bytes that are not a tensor list.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "NOTATENS")
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "ef_process") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 8))))
