//! The two placements the ring is compared with: `hash % n`, and the range assignor a Kafka consumer group
//! uses by default (Herald's Kafka log sets no `partition.assignment.strategy`, so librdkafka's default
//! `range,roundrobin` applies, and with one topic every member supports range).

/// Owner of `key` among `n` nodes by remainder: the placement the ring replaces.
pub fn modulo(hash: u64, n: usize) -> u32 {
    (hash % n as u64) as u32
}

/// Each partition's owner under the range assignor: members sorted by member id (Herald's client id is the
/// node id, so the order of `members` as given, which is sorted), each taking a contiguous run of
/// `partitions / members` partitions and the first `partitions % members` one more.
pub fn range(members: &[u32], partitions: u32) -> Vec<u32> {
    let m = members.len() as u32;
    if m == 0 {
        return vec![u32::MAX; partitions as usize];
    }
    let (per, extra) = (partitions / m, partitions % m);
    let mut owners = Vec::with_capacity(partitions as usize);
    for (i, &member) in (0u32..).zip(members) {
        let take = per + u32::from(i < extra);
        owners.extend(std::iter::repeat_n(member, take as usize));
    }
    owners
}
