//! Users on nodes: how evenly the ring spreads them (sampled, and exactly from the arcs), and how many move
//! when one node joins, leaves or drains — next to `xxh3(user) % n`.

use herald_proto::UserId;
use xxhash_rust::xxh3::xxh3_64;

use crate::assignors;
use crate::membership::Membership;
use crate::table::{Table, percent, ratio};

/// The users' key bytes (the ring hashes them) and their xxh3, for `% n`.
pub struct UserKeys {
    bytes: Vec<[u8; 16]>,
    hashes: Vec<u64>,
}

impl UserKeys {
    pub fn new(users: &[UserId]) -> UserKeys {
        let bytes: Vec<[u8; 16]> = users.iter().map(|user| user.to_bytes()).collect();
        let hashes = bytes.iter().map(|b| xxh3_64(b)).collect();
        UserKeys { bytes, hashes }
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.iter().map(|b| b.as_slice())
    }
}

pub struct UserRows {
    pub balance: Vec<String>,
    pub moves: Vec<String>,
    /// Users that moved between two nodes that were both there before and after a change: 0 on a ring.
    pub moved_between_staying: usize,
}

pub fn measure(membership: &Membership, users: &UserKeys) -> UserRows {
    let n = membership.n;
    let count = users.bytes.len();
    let base = membership.owners(&membership.base, users.keys());
    let joined = membership.owners(&membership.joined, users.keys());
    let left = membership.owners(&membership.left, users.keys());
    let draining = membership.owners(&membership.draining, users.keys());

    let mut per_node = vec![0usize; n];
    for &owner in &base {
        if let Some(c) = per_node.get_mut(owner as usize) {
            *c += 1;
        }
    }
    let average = count as f64 / n as f64;
    let sampled_max = per_node.iter().copied().max().unwrap_or(0) as f64 / average;
    let sampled_min = per_node.iter().copied().min().unwrap_or(0) as f64 / average;
    let shares: Vec<f64> = membership.base.shares().iter().map(|s| s.1).collect();
    let exact_max = shares.iter().copied().fold(0.0, f64::max) * n as f64;
    let exact_min = shares.iter().copied().fold(f64::INFINITY, f64::min) * n as f64;

    let fraction = |moved: usize| moved as f64 / count as f64;
    let moved = |after: &[u32]| base.iter().zip(after).filter(|(b, a)| b != a).count();
    // On a join every move must go to the newcomer; on a leave or drain every move must come from the leaver.
    let newcomer = n as u32;
    let leaver = membership.changed as u32;
    let stray_joins = base.iter().zip(&joined).filter(|(b, a)| b != a && **a != newcomer).count();
    let stray_leaves = [&left, &draining]
        .iter()
        .map(|after| base.iter().zip(after.iter()).filter(|(b, a)| b != a && **b != leaver).count())
        .sum::<usize>();

    let joiner_share = membership.joined.shares().get(n).map_or(0.0, |s| s.1);
    let leaver_share = shares.get(membership.changed).copied().unwrap_or(0.0);
    let modulo_moved =
        |nodes: usize| users.hashes.iter().filter(|&&h| assignors::modulo(h, n) != assignors::modulo(h, nodes)).count();

    UserRows {
        balance: vec![
            n.to_string(),
            crate::table::count(average.round() as usize),
            ratio(sampled_max),
            ratio(sampled_min),
            ratio(exact_max),
            ratio(exact_min),
        ],
        moves: vec![
            n.to_string(),
            percent(fraction(moved(&joined))),
            percent(joiner_share),
            percent(fraction(modulo_moved(n + 1))),
            percent(1.0 / (n + 1) as f64),
            percent(fraction(moved(&left))),
            percent(fraction(moved(&draining))),
            percent(leaver_share),
            percent(fraction(modulo_moved(n - 1))),
            percent(1.0 / n as f64),
        ],
        moved_between_staying: stray_joins + stray_leaves,
    }
}

pub fn print(rows: &[UserRows], users: usize) {
    println!("### Users per node ({} synthetic users; exact = the node's arcs of the hash space)\n", {
        crate::table::count(users)
    });
    let mut balance = Table::new(&[
        "nodes",
        "users per node",
        "sampled max/avg",
        "sampled min/avg",
        "exact max/avg",
        "exact min/avg",
    ]);
    rows.iter().for_each(|r| balance.row(r.balance.clone()));
    balance.print();
    println!("### Users that move when one node joins, leaves or drains\n");
    let mut moves = Table::new(&[
        "nodes",
        "join: ring",
        "join: exact",
        "join: % n",
        "ideal 1/(N+1)",
        "leave: ring",
        "drain: ring",
        "leave: exact",
        "leave: % n",
        "ideal 1/N",
    ]);
    rows.iter().for_each(|r| moves.row(r.moves.clone()));
    moves.print();
    let stray: usize = rows.iter().map(|r| r.moved_between_staying).sum();
    println!("Users that moved between two nodes that both stayed, over every change above: {stray}\n");
}
