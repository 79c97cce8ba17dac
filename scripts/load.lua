-- One generic webhook on the route `load`, repeated (the bridge runs in dry-run; scripts/load).
wrk.method = "POST"
wrk.body = '{"environment":"production","sha":"c0ffee1234567890abcdef1234567890abcdef12","ref":"main","status":"running"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer demo-generic-secret"
