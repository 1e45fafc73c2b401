;; exportclash already exports the name of the host's interrupt global, so
;; it cannot be instrumented; the host falls back to wazero's termination
;; checks and still bounds its infinite loop.
(module
  (memory (export "memory") 1)
  (global (export "__edgefleet_interrupt") (mut i32) (i32.const 0))
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "ef_process") (param $ptr i32) (param $len i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
