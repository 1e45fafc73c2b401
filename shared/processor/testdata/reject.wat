;; reject refuses every input with a message (the error flag set in len).
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "frame too short")
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "ef_process") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 0x8000000f))))
