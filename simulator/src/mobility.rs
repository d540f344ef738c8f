//! Walking nodes (random waypoint): links appear and vanish with radio
//! range as nodes move. A grid of cells one radio range wide finds the
//! nodes near a walker, so a step costs time in proportion to the walkers
//! and their neighbourhoods, never to the square of the node count.

use std::collections::HashMap;

use rand::RngExt;

use crate::engine::Engine;
use crate::scenario::MobilitySpec;

/// Properties of the links walkers make.
#[derive(Clone, Copy, Debug)]
pub struct NewLink {
    /// One-way latency, µs.
    pub latency_us: u64,
    /// Jitter, µs.
    pub jitter_us: u64,
    /// Bytes per millisecond.
    pub bytes_per_ms: u64,
    /// Loss, 0 to 1.
    pub loss: f64,
}

struct Walker {
    node: usize,
    target: (f64, f64),
    speed_mps: f64,
    pause_until_us: u64,
}

/// The walkers and the links they make and break.
pub struct Mobility {
    walkers: Vec<Walker>,
    /// Every node's position, metres.
    pub positions: Vec<(f64, f64)>,
    area: [f64; 4],
    range_m: f64,
    speed_mps: [f64; 2],
    pause_s: [f64; 2],
    /// Time between steps, µs.
    pub step_us: u64,
    /// The link (first half) of each node pair that ever had one.
    pair: HashMap<(usize, usize), usize>,
    link: NewLink,
    /// Node pairs that met for the first time (new links).
    pub links_made: u64,
    /// Links that came up again.
    pub links_up: u64,
    /// Links that went down.
    pub links_down: u64,
}

impl Mobility {
    /// `walkers` of the nodes at `positions` walk; `links` are the existing
    /// links as (a, b, first half).
    pub fn new(
        spec: &MobilitySpec,
        range_m: f64,
        positions: Vec<(f64, f64)>,
        walkers: &[usize],
        links: impl IntoIterator<Item = (usize, usize, usize)>,
        link: NewLink,
        engine: &mut Engine,
    ) -> Mobility {
        let mut area = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for &(x, y) in &positions {
            area = [
                area[0].min(x),
                area[1].min(y),
                area[2].max(x),
                area[3].max(y),
            ];
        }
        let mut mobility = Mobility {
            walkers: Vec::with_capacity(walkers.len()),
            positions,
            area,
            range_m,
            speed_mps: spec.speed_mps,
            pause_s: spec.pause_s,
            step_us: (spec.step_s * 1e6).max(1.0) as u64,
            pair: links
                .into_iter()
                .map(|(a, b, l)| ((a.min(b), a.max(b)), l))
                .collect(),
            link,
            links_made: 0,
            links_up: 0,
            links_down: 0,
        };
        for &node in walkers {
            let (target, speed_mps) = mobility.waypoint(engine);
            mobility.walkers.push(Walker {
                node,
                target,
                speed_mps,
                pause_until_us: 0,
            });
        }
        mobility
    }

    /// How many nodes walk.
    pub fn walkers(&self) -> usize {
        self.walkers.len()
    }

    fn waypoint(&self, engine: &mut Engine) -> ((f64, f64), f64) {
        let [x0, y0, x1, y1] = self.area;
        let rng = engine.rng();
        let x = if x1 > x0 {
            rng.random_range(x0..x1)
        } else {
            x0
        };
        let y = if y1 > y0 {
            rng.random_range(y0..y1)
        } else {
            y0
        };
        let [s0, s1] = self.speed_mps;
        let speed = if s1 > s0 {
            rng.random_range(s0..s1)
        } else {
            s0
        };
        ((x, y), speed)
    }

    /// Moves every walker one step, then brings its links in line with
    /// radio range. Returns the links (first halves) that came up and
    /// those that went down.
    pub fn step(&mut self, engine: &mut Engine) -> (Vec<usize>, Vec<usize>) {
        let now = engine.now_us();
        let dt = self.step_us as f64 / 1e6;
        for k in 0..self.walkers.len() {
            let w = &self.walkers[k];
            if w.pause_until_us > now {
                continue;
            }
            let (x, y) = self.positions[w.node];
            let (tx, ty) = w.target;
            let left = (tx - x).hypot(ty - y);
            let go = w.speed_mps * dt;
            if go < left {
                self.positions[w.node] = (x + (tx - x) * go / left, y + (ty - y) * go / left);
                continue;
            }
            self.positions[w.node] = (tx, ty);
            let [p0, p1] = self.pause_s;
            let pause = if p1 > p0 {
                engine.rng().random_range(p0..p1)
            } else {
                p0
            };
            let (target, speed_mps) = self.waypoint(engine);
            let w = &mut self.walkers[k];
            w.pause_until_us = now + (pause * 1e6) as u64;
            w.target = target;
            w.speed_mps = speed_mps;
        }
        // Nodes by grid cell.
        let cell = |p: (f64, f64)| -> (i64, i64) {
            (
                (p.0 / self.range_m).floor() as i64,
                (p.1 / self.range_m).floor() as i64,
            )
        };
        let mut grid: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
        for (v, &p) in self.positions.iter().enumerate() {
            grid.entry(cell(p)).or_default().push(v);
        }
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for k in 0..self.walkers.len() {
            let w = self.walkers[k].node;
            let p = self.positions[w];
            let (cx, cy) = cell(p);
            for dx in -1..=1 {
                for dy in -1..=1 {
                    let Some(near) = grid.get(&(cx + dx, cy + dy)) else {
                        continue;
                    };
                    for &v in near {
                        let q = self.positions[v];
                        if v == w || (p.0 - q.0).hypot(p.1 - q.1) > self.range_m {
                            continue;
                        }
                        let key = (w.min(v), w.max(v));
                        match self.pair.get(&key) {
                            Some(&l) if !engine.link_up(l) => {
                                engine.set_link(l, true);
                                self.links_up += 1;
                                up.push(l);
                            }
                            Some(_) => {}
                            None => {
                                let (l, _) = engine.add_link(
                                    key.0,
                                    key.1,
                                    self.link.latency_us,
                                    self.link.jitter_us,
                                    self.link.bytes_per_ms,
                                    self.link.loss,
                                );
                                self.pair.insert(key, l);
                                self.links_made += 1;
                                up.push(l);
                            }
                        }
                    }
                }
            }
            for i in 0..engine.out_links(w).len() {
                let l = engine.out_links(w)[i];
                let v = engine.links[l].to;
                let q = self.positions[v];
                if engine.link_up(l) && (p.0 - q.0).hypot(p.1 - q.1) > self.range_m {
                    let first = l & !1;
                    engine.set_link(first, false);
                    self.links_down += 1;
                    down.push(first);
                }
            }
        }
        (up, down)
    }
}
