"""Operations: metrics, logs, tracing and the probes."""
