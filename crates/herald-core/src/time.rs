use herald_proto::Millis;

/// Wall-clock milliseconds since the Unix epoch. Used for display times only, never for order.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}
