//! The shard router and the ordered-reply queue in memory, against a
//! single-map model: several workers' connections run generated scripts of
//! sets, gets, increments and multi-key gets over keys spread across the
//! shards, while a scheduler interleaves their input (cut anywhere), the
//! parcels between workers (in any order across pairs, in order within
//! one, as the kernel and the queues keep them) and the sends. Every
//! connection must read exactly what one map answering its script in
//! order would have said.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use protocols::{Fed, StreamSession};

use super::*;
use crate::connection::{Action, Connection, Env, Limits, Outgoing};
use crate::stats::WorkerStats;

type Shard = HashMap<String, String>;

/// One command of a script.
#[derive(Debug, Clone)]
enum Op {
    Set(usize, u8),
    Get(usize),
    Incr(usize),
    MultiGet(Vec<usize>),
}

fn key(conn: usize, k: usize) -> String {
    format!("c{conn}k{k}")
}

impl Op {
    /// The command's line for connection `conn`.
    fn line(&self, conn: usize) -> String {
        match self {
            Op::Set(k, v) => format!("S {} {v}\n", key(conn, *k)),
            Op::Get(k) => format!("G {}\n", key(conn, *k)),
            Op::Incr(k) => format!("I {}\n", key(conn, *k)),
            Op::MultiGet(ks) => {
                let keys: Vec<String> = ks.iter().map(|k| key(conn, *k)).collect();
                format!("M {}\n", keys.join(" "))
            }
        }
    }
}

/// What a shard (or the model's one map) answers to one key's command.
fn apply(map: &mut Shard, verb: &str, key: &str, value: Option<&str>) -> String {
    match verb {
        "S" => {
            map.insert(key.to_string(), value.unwrap_or("").to_string());
            "OK".into()
        }
        "I" => {
            let n = map
                .get(key)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                + 1;
            map.insert(key.to_string(), n.to_string());
            n.to_string()
        }
        _ => map.get(key).cloned().unwrap_or_else(|| "-".into()),
    }
}

/// The model: one map answering a connection's script in order.
fn model(scripts: &[Vec<Op>]) -> Vec<String> {
    let mut map = Shard::new();
    scripts
        .iter()
        .enumerate()
        .map(|(conn, ops)| {
            ops.iter()
                .map(|op| {
                    let line = op.line(conn);
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let reply = match words[0] {
                        "M" => {
                            let values: Vec<String> = words[1..]
                                .iter()
                                .map(|k| apply(&mut map, "G", k, None))
                                .collect();
                            values.join(",")
                        }
                        verb => apply(&mut map, verb, words[1], words.get(2).copied()),
                    };
                    reply + "\n"
                })
                .collect()
        })
        .collect()
}

/// The session under test: every key's command goes to its owner.
struct Lines {
    mesh: Mesh<Shard>,
}

impl StreamSession for Lines {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, _room: usize) -> Fed {
        let mut taken = 0;
        while let Some(end) = input[taken..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&input[taken..taken + end]).into_owned();
            taken += end + 1;
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            if words[0] == "M" {
                let parts = words[1..]
                    .iter()
                    .map(|k| {
                        let k = k.clone();
                        let owner = self.mesh.owner_of(k.as_bytes());
                        (owner, move |s: &mut Shard| {
                            apply(s, "G", &k, None).into_bytes()
                        })
                    })
                    .collect();
                self.mesh.gather(out, parts, |values, out| {
                    let values: Vec<String> = values
                        .into_iter()
                        .map(|v| String::from_utf8(v).unwrap())
                        .collect();
                    out.extend_from_slice(values.join(",").as_bytes());
                    out.push(b'\n');
                });
            } else {
                let owner = self.mesh.owner_of(words[1].as_bytes());
                self.mesh.ask(out, owner, move |s: &mut Shard| {
                    let reply = apply(s, &words[0], &words[1], words.get(2).map(String::as_str));
                    (reply + "\n").into_bytes()
                });
            }
            if self.mesh.waiting() >= MAX_WAITING {
                break;
            }
        }
        Fed::all(taken)
    }
}

/// One connection and what the scripted peer has done with it.
struct Peer {
    worker: usize,
    conn: Connection,
    script: Vec<u8>,
    fed: usize,
    receiving: bool,
    read: Vec<u8>,
}

/// The workers' ends of the mesh, their counters, and the parcels on
/// their way, per (sender, receiver).
struct World {
    locals: Vec<Rc<MeshLocal>>,
    stats: Vec<Arc<WorkerStats>>,
    limits: Limits,
    now: Instant,
    in_transit: HashMap<(usize, usize), VecDeque<Parcel>>,
    peers: Vec<Peer>,
    /// Each worker's handle on the shards, and its own shard.
    meshes: Vec<Mesh<Shard>>,
    shards: Vec<Rc<RefCell<Shard>>>,
}

impl World {
    fn new(workers: usize, scripts: &[Vec<Op>]) -> Self {
        let shared = MeshShared::new(workers, true).expect("mesh");
        let stats: Vec<Arc<WorkerStats>> = (0..workers).map(|_| Arc::default()).collect();
        let locals: Vec<Rc<MeshLocal>> = (0..workers)
            .map(|w| MeshLocal::new(w, shared.clone(), stats[w].clone()))
            .collect();
        let shards: Vec<Rc<RefCell<Shard>>> = (0..workers).map(|_| Rc::default()).collect();
        let meshes: Vec<Mesh<Shard>> = locals
            .iter()
            .zip(&shards)
            .map(|(l, shard)| Mesh::new(l.clone(), shard.clone(), 0))
            .collect();
        let mut world = World {
            locals,
            stats,
            limits: Limits::default(),
            now: Instant::now(),
            in_transit: HashMap::new(),
            peers: Vec::new(),
            meshes,
            shards,
        };
        for (c, ops) in scripts.iter().enumerate() {
            let worker = c % workers;
            let session = Box::new(Lines {
                mesh: world.meshes[worker].clone(),
            });
            let conn = Connection::new(session, &world.env(worker));
            world.peers.push(Peer {
                worker,
                conn,
                script: ops
                    .iter()
                    .map(|op| op.line(c))
                    .collect::<String>()
                    .into_bytes(),
                fed: 0,
                receiving: false,
                read: Vec::new(),
            });
            world.poll(c);
        }
        world
    }

    fn env(&self, worker: usize) -> Env<'_> {
        Env {
            limits: &self.limits,
            stats: &self.stats[worker],
            now: self.now,
            mesh: Some(&self.locals[worker]),
        }
    }

    /// Does what connection `c` asks (its sends are taken whole at
    /// once), then hands its asks to its worker's mesh.
    fn poll(&mut self, c: usize) {
        let w = self.peers[c].worker;
        let env = Env {
            limits: &self.limits,
            stats: &self.stats[w],
            now: self.now,
            mesh: Some(&self.locals[w]),
        };
        let peer = &mut self.peers[c];
        while let Some(action) = peer.conn.poll_action(&env) {
            match action {
                Action::Send => {
                    let Outgoing::Owned(bytes) = peer.conn.outgoing() else {
                        panic!("nothing is lent here");
                    };
                    let n = bytes.len();
                    peer.read.extend_from_slice(bytes);
                    peer.conn.on_sent(n, &env);
                }
                Action::StartReceiving => peer.receiving = true,
                Action::StopReceiving => {
                    peer.receiving = false;
                    peer.conn.on_recv_ended();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        crate::lifecycle::dispatch_asks(&mut peer.conn, (c as u32, 0), env.mesh);
    }

    /// Connection `c`'s peer sends up to `n` more bytes of its script.
    fn feed(&mut self, c: usize, n: usize) {
        let peer = &mut self.peers[c];
        if !peer.receiving || peer.fed == peer.script.len() {
            return;
        }
        let end = peer.fed.saturating_add(n.max(1)).min(peer.script.len());
        let chunk = peer.script[peer.fed..end].to_vec();
        peer.fed = end;
        let w = peer.worker;
        let env = Env {
            limits: &self.limits,
            stats: &self.stats[w],
            now: self.now,
            mesh: Some(&self.locals[w]),
        };
        self.peers[c].conn.on_received(&chunk, &env);
        self.poll(c);
    }

    /// Every worker's finished parcels set off.
    fn post(&mut self) {
        for (from, local) in self.locals.iter().enumerate() {
            let mut parcels = Vec::new();
            local.take_parcels(&mut parcels);
            for (to, parcel) in parcels {
                self.in_transit
                    .entry((from, to))
                    .or_default()
                    .push_back(parcel);
            }
        }
    }

    /// The oldest parcel between the `pick`th pair with any arrives.
    fn deliver(&mut self, pick: usize) -> bool {
        let mut pairs: Vec<(usize, usize)> = self
            .in_transit
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(pair, _)| *pair)
            .collect();
        if pairs.is_empty() {
            return false;
        }
        pairs.sort_unstable();
        let pair = pairs[pick % pairs.len()];
        let parcel = self.in_transit.get_mut(&pair).and_then(VecDeque::pop_front);
        for envelope in parcel.into_iter().flatten() {
            let Some(answer) = self.locals[pair.1].receive(envelope) else {
                continue;
            };
            let c = answer.conn.0 as usize;
            let Body::Answer(bytes) = answer.body else {
                panic!("an answer");
            };
            self.peers[c].conn.on_answer(answer.ask, answer.part, bytes);
            self.poll(c);
        }
        true
    }

    fn all_fed(&self) -> bool {
        self.peers.iter().all(|p| p.fed == p.script.len())
    }
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..6usize;
    prop_oneof![
        (k.clone(), any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
        k.clone().prop_map(Op::Get),
        k.clone().prop_map(Op::Incr),
        prop::collection::vec(k, 1..5).prop_map(Op::MultiGet),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn sharded_replies_match_one_map_in_request_order(
        workers in 2..5usize,
        scripts in prop::collection::vec(prop::collection::vec(op(), 1..40), 1..6),
        schedule in prop::collection::vec((0..3u8, 0..64usize), 0..400),
    ) {
        let mut world = World::new(workers, &scripts);
        // The generated schedule first, then everything left, in order.
        for (step, arg) in schedule {
            match step {
                0 => world.feed(arg % scripts.len(), arg),
                1 => world.post(),
                _ => {
                    world.deliver(arg);
                }
            }
        }
        for _ in 0..100_000 {
            for c in 0..scripts.len() {
                world.feed(c, usize::MAX);
            }
            world.post();
            if !world.deliver(0) && world.all_fed() {
                world.post();
                if !world.deliver(0) {
                    break;
                }
            }
        }
        let expected = model(&scripts);
        for (c, peer) in world.peers.iter().enumerate() {
            prop_assert_eq!(String::from_utf8_lossy(&peer.read), expected[c].as_str(), "connection {}", c);
            prop_assert_eq!(peer.conn.asks_waiting(), 0);
        }
        // Every worker names the same owner for a key, and each key lives
        // on its owner's shard only.
        for (w, shard) in world.shards.iter().enumerate() {
            for key in shard.borrow().keys() {
                let owners: Vec<usize> =
                    world.meshes.iter().map(|m| m.owner_of(key.as_bytes())).collect();
                prop_assert!(owners.iter().all(|&o| o == w), "{} on {}: {:?}", key, w, owners);
            }
        }
        // Messages balance.
        let sent: u64 = world.stats.iter().map(|s| s.worker_messages_sent.get()).sum();
        let received: u64 = world.stats.iter().map(|s| s.worker_messages_received.get()).sum();
        prop_assert_eq!(sent, received);
        let waiting: u64 = world.stats.iter().map(|s| s.asks_waiting.get()).sum();
        prop_assert_eq!(waiting, 0);
    }
}

/// The interleaving that once held a worker to its drain deadline: worker
/// 0 retires while worker 1 may still ask (so it may not stop yet), then
/// worker 1 retires and stops. Worker 0 hears of it from no message, so it
/// must still be polling: `lingering` stays true until `may_stop` lets it
/// go, whoever retired last.
#[test]
fn a_worker_that_retired_first_keeps_polling_until_it_may_stop() {
    let shared = MeshShared::new(2, true).expect("mesh");
    let locals: Vec<Rc<MeshLocal>> = (0..2)
        .map(|w| MeshLocal::new(w, shared.clone(), Arc::default()))
        .collect();
    assert!(!locals[0].lingering(), "not retired yet");
    assert!(!locals[0].may_stop(true, false), "worker 1 may still ask");
    assert!(locals[0].lingering());
    assert!(locals[1].may_stop(true, false), "the last to retire stops");
    assert!(
        locals[0].lingering(),
        "worker 0 must look again, or it sleeps until its deadline"
    );
    assert!(locals[0].may_stop(true, false));
}
