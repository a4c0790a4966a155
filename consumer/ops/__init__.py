"""Operations: metrics, health probes, logs."""
