//! Graphs to simulate: generators and loaders for real data.
//!
//! A topology is nodes (with an optional position) and undirected edges
//! (with an optional latency or link quality from the data). Nothing here
//! grows with the square of the node count: the random geometric graph
//! buckets nodes into cells of the radio range.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::RngExt;
use rand::rngs::StdRng;
use thiserror::Error;

/// Where a node is: metres in a plane (generated), or degrees (from data).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Position {
    /// Metres from the area's corner.
    Plane {
        /// East.
        x: f64,
        /// North.
        y: f64,
    },
    /// Latitude and longitude in degrees.
    Geo {
        /// Latitude.
        lat: f64,
        /// Longitude.
        lon: f64,
    },
}

/// One node of a topology.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Its name in the source data (or its index).
    pub name: String,
    /// Its position, if known.
    pub position: Option<Position>,
}

/// One undirected link.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// One end (node index).
    pub a: usize,
    /// The other end.
    pub b: usize,
    /// Latency from the data (ms), if it says.
    pub latency_ms: Option<f64>,
    /// Link quality from the data (0 to 1 delivery probability), if it says.
    pub quality: Option<f64>,
}

/// A graph to simulate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
    /// The links, each once.
    pub edges: Vec<Edge>,
}

/// Why a topology file could not be read.
#[derive(Debug, Error)]
pub enum TopologyError {
    /// Not valid JSON.
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Not valid XML.
    #[error("not valid GraphML: {0}")]
    Xml(String),
    /// Valid syntax, wrong content.
    #[error("{0}")]
    Content(String),
}

fn content(what: impl Into<String>) -> TopologyError {
    TopologyError::Content(what.into())
}

impl Topology {
    fn with_nodes(n: usize) -> Topology {
        Topology {
            nodes: (0..n)
                .map(|i| NodeInfo {
                    name: i.to_string(),
                    position: None,
                })
                .collect(),
            edges: Vec::new(),
        }
    }

    /// Adds an edge unless it is a self-loop or already there.
    fn link(
        &mut self,
        seen: &mut HashSet<(usize, usize)>,
        a: usize,
        b: usize,
    ) -> Option<&mut Edge> {
        if a == b || !seen.insert((a.min(b), a.max(b))) {
            return None;
        }
        self.edges.push(Edge {
            a,
            b,
            latency_ms: None,
            quality: None,
        });
        self.edges.last_mut()
    }

    /// Neighbour lists.
    pub fn adjacency(&self) -> Vec<Vec<usize>> {
        let mut adj = vec![Vec::new(); self.nodes.len()];
        for e in &self.edges {
            adj[e.a].push(e.b);
            adj[e.b].push(e.a);
        }
        adj
    }

    /// The connected components, largest first (each a sorted node list).
    pub fn components(&self) -> Vec<Vec<usize>> {
        self.components_among(|_| true)
    }

    /// The connected components of the nodes `keep` accepts (links to
    /// other nodes left out), largest first.
    pub fn components_among(&self, keep: impl Fn(usize) -> bool) -> Vec<Vec<usize>> {
        let adj = self.adjacency();
        let mut seen: Vec<bool> = (0..self.nodes.len()).map(|v| !keep(v)).collect();
        let mut out = Vec::new();
        for start in 0..self.nodes.len() {
            if seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let mut comp = Vec::new();
            while let Some(x) = stack.pop() {
                comp.push(x);
                for &y in &adj[x] {
                    if !seen[y] {
                        seen[y] = true;
                        stack.push(y);
                    }
                }
            }
            comp.sort_unstable();
            out.push(comp);
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.len()));
        out
    }

    /// A line 0 - 1 - ... - n-1.
    pub fn line(n: usize) -> Topology {
        let mut t = Topology::with_nodes(n);
        let mut seen = HashSet::new();
        for i in 1..n {
            t.link(&mut seen, i - 1, i);
        }
        t
    }

    /// A `width` x `height` grid, 100 m apart.
    pub fn grid(width: usize, height: usize) -> Topology {
        let mut t = Topology::with_nodes(width * height);
        let mut seen = HashSet::new();
        for r in 0..height {
            for c in 0..width {
                let i = r * width + c;
                t.nodes[i].position = Some(Position::Plane {
                    x: c as f64 * 100.0,
                    y: r as f64 * 100.0,
                });
                if c + 1 < width {
                    t.link(&mut seen, i, i + 1);
                }
                if r + 1 < height {
                    t.link(&mut seen, i, i + width);
                }
            }
        }
        t
    }

    /// `n` nodes placed uniformly in a square of `side_m` metres, linked
    /// when within `range_m` of each other.
    pub fn random_geometric(n: usize, side_m: f64, range_m: f64, rng: &mut StdRng) -> Topology {
        let mut t = Topology::with_nodes(n);
        let points: Vec<(f64, f64)> = (0..n)
            .map(|_| (rng.random_range(0.0..side_m), rng.random_range(0.0..side_m)))
            .collect();
        for (node, (x, y)) in t.nodes.iter_mut().zip(&points) {
            node.position = Some(Position::Plane { x: *x, y: *y });
        }
        t.edges = geometric_edges(&points, range_m);
        t
    }

    /// Nodes uniform in each disc `(centre, radius, nodes)`, linked within
    /// `range_m`: node numbers follow the discs' order.
    pub fn clusters(discs: &[([f64; 2], f64, usize)], range_m: f64, rng: &mut StdRng) -> Topology {
        let mut points = Vec::new();
        for &([cx, cy], radius, nodes) in discs {
            for _ in 0..nodes {
                // The square root spreads them evenly over the area.
                let r = radius * rng.random_range(0.0f64..=1.0).sqrt();
                let angle = rng.random_range(0.0..std::f64::consts::TAU);
                points.push((cx + r * angle.cos(), cy + r * angle.sin()));
            }
        }
        let mut t = Topology::with_nodes(points.len());
        for (node, (x, y)) in t.nodes.iter_mut().zip(&points) {
            node.position = Some(Position::Plane { x: *x, y: *y });
        }
        t.edges = geometric_edges(&points, range_m);
        t
    }

    /// Barabási-Albert preferential attachment: each new node links to `m`
    /// existing nodes chosen in proportion to their degree.
    pub fn barabasi_albert(n: usize, m: usize, rng: &mut StdRng) -> Topology {
        let m = m.max(1);
        let mut t = Topology::with_nodes(n);
        let mut seen = HashSet::new();
        // Every edge end once: picking from it is picking by degree.
        let mut ends: Vec<usize> = Vec::new();
        for i in 0..n.min(m + 1) {
            for j in 0..i {
                t.link(&mut seen, i, j);
                ends.extend([i, j]);
            }
        }
        for i in (m + 1)..n {
            let mut chosen = HashSet::new();
            while chosen.len() < m {
                chosen.insert(ends[rng.random_range(0..ends.len())]);
            }
            let mut chosen: Vec<usize> = chosen.into_iter().collect();
            chosen.sort_unstable();
            for j in chosen {
                t.link(&mut seen, i, j);
                ends.extend([i, j]);
            }
        }
        t
    }

    /// Watts-Strogatz small world: a ring where each node links to its `k`
    /// nearest neighbours (k even), each link rewired with probability `beta`.
    pub fn watts_strogatz(n: usize, k: usize, beta: f64, rng: &mut StdRng) -> Topology {
        let mut t = Topology::with_nodes(n);
        let mut seen = HashSet::new();
        if n < 3 {
            return Topology::line(n);
        }
        for i in 0..n {
            for step in 1..=(k / 2).max(1) {
                let mut j = (i + step) % n;
                if rng.random_range(0.0..1.0) < beta {
                    // Rewire to a random node that is not i nor already linked.
                    for _ in 0..16 {
                        let candidate = rng.random_range(0..n);
                        if candidate != i && !seen.contains(&(i.min(candidate), i.max(candidate))) {
                            j = candidate;
                            break;
                        }
                    }
                }
                t.link(&mut seen, i, j);
            }
        }
        t
    }

    /// meshnet-lab JSON: `{"nodes":[{"id":..}], "links":[{"source","target",
    /// "type","source_tq","target_tq"}]}`. `keep_types`: link types to keep
    /// (empty: all). Link quality is the mean of the two transmit qualities.
    /// As meshnet-lab's own `network.py` reads it, the node list is
    /// optional and a node that only a link names is created (its Freifunk
    /// files name VPN interconnects that way); such nodes come after the
    /// listed ones, in the order the links first name them.
    pub fn from_meshnet_lab(text: &str, keep_types: &[String]) -> Result<Topology, TopologyError> {
        let json: serde_json::Value = serde_json::from_str(text)?;
        json_graph(&json, "meshnet-lab JSON", Implicit::Create, |link| {
            let kind = link["type"].as_str().unwrap_or("");
            if !keep_types.is_empty() && !keep_types.iter().any(|k| k == kind) {
                return None;
            }
            let tq = [&link["source_tq"], &link["target_tq"]]
                .iter()
                .filter_map(|v| v.as_f64())
                .collect::<Vec<_>>();
            let quality = (!tq.is_empty()).then(|| tq.iter().sum::<f64>() / tq.len() as f64);
            Some(quality.map(|q| q.clamp(0.0, 1.0)))
        })
    }

    /// NetJSON NetworkGraph. A link's `cost` (ETX, at least 1) becomes a
    /// link quality of 1/sqrt(cost) each way.
    pub fn from_netjson(text: &str) -> Result<Topology, TopologyError> {
        let json: serde_json::Value = serde_json::from_str(text)?;
        if json["type"].as_str() != Some("NetworkGraph") {
            return Err(content(
                "a NetJSON file must have \"type\": \"NetworkGraph\"",
            ));
        }
        json_graph(&json, "NetJSON", Implicit::Refuse, |link| {
            Some(link["cost"].as_f64().map(|c| 1.0 / c.max(1.0).sqrt()))
        })
    }

    /// GraphML (as in the Internet Topology Zoo). Nodes with `Latitude` and
    /// `Longitude` get positions, and their links a latency from the
    /// great-circle distance at two thirds of the speed of light.
    pub fn from_graphml(text: &str) -> Result<Topology, TopologyError> {
        let doc =
            roxmltree::Document::parse(text).map_err(|e| TopologyError::Xml(e.to_string()))?;
        let mut keys = HashMap::new();
        for key in doc.descendants().filter(|n| n.has_tag_name("key")) {
            if let (Some(id), Some(name)) = (key.attribute("id"), key.attribute("attr.name")) {
                keys.insert(id.to_string(), name.to_string());
            }
        }
        let data = |node: roxmltree::Node, name: &str| -> Option<String> {
            node.children()
                .filter(|c| c.has_tag_name("data"))
                .find(|c| {
                    c.attribute("key")
                        .and_then(|k| keys.get(k))
                        .is_some_and(|n| n == name)
                })
                .and_then(|c| c.text())
                .map(str::to_string)
        };
        let mut t = Topology::default();
        let mut index = HashMap::new();
        for node in doc.descendants().filter(|n| n.has_tag_name("node")) {
            let id = node
                .attribute("id")
                .ok_or_else(|| content("a GraphML node has no id"))?;
            let lat = data(node, "Latitude").and_then(|v| v.trim().parse::<f64>().ok());
            let lon = data(node, "Longitude").and_then(|v| v.trim().parse::<f64>().ok());
            index.insert(id.to_string(), t.nodes.len());
            t.nodes.push(NodeInfo {
                name: data(node, "label").unwrap_or_else(|| id.to_string()),
                position: lat.zip(lon).map(|(lat, lon)| Position::Geo { lat, lon }),
            });
        }
        let mut seen = HashSet::new();
        for (i, edge) in doc
            .descendants()
            .filter(|n| n.has_tag_name("edge"))
            .enumerate()
        {
            let end = |attr: &str| -> Result<usize, TopologyError> {
                let id = edge
                    .attribute(attr)
                    .ok_or_else(|| content(format!("GraphML edge {i} has no {attr}")))?;
                index
                    .get(id)
                    .copied()
                    .ok_or_else(|| content(format!("GraphML edge {i} names unknown node {id:?}")))
            };
            let (a, b) = (end("source")?, end("target")?);
            let latency = match (t.nodes[a].position, t.nodes[b].position) {
                (Some(p), Some(q)) => Some(distance_m(p, q) / 200_000.0),
                _ => None,
            };
            if let Some(e) = t.link(&mut seen, a, b) {
                e.latency_ms = latency;
            }
        }
        Ok(t)
    }

    /// A plain edge list: one `a b` pair per line (names or numbers);
    /// `#` starts a comment.
    pub fn from_edge_list(text: &str) -> Result<Topology, TopologyError> {
        let mut t = Topology::default();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (line_no, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 2 {
                return Err(content(format!(
                    "edge list line {}: expected two node names, found {line:?}",
                    line_no + 1
                )));
            }
            let mut id = |name: &str| -> usize {
                if let Some(i) = index.get(name) {
                    return *i;
                }
                let i = t.nodes.len();
                index.insert(name.to_string(), i);
                t.nodes.push(NodeInfo {
                    name: name.to_string(),
                    position: None,
                });
                i
            };
            let (a, b) = (id(parts[0]), id(parts[1]));
            t.link(&mut seen, a, b);
        }
        Ok(t)
    }
}

/// What a JSON graph does with a node that only a link names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Implicit {
    /// Creates it (meshnet-lab; the node list may be absent).
    Create,
    /// Refuses the file (NetJSON requires every node listed).
    Refuse,
}

/// Reads `{"nodes": [{"id"}], "links": [{"source", "target", ...}]}`, the
/// shape meshnet-lab and NetJSON share. `quality` gives a link's quality, or
/// `None` to leave the link out.
fn json_graph(
    json: &serde_json::Value,
    format: &str,
    implicit: Implicit,
    quality: impl Fn(&serde_json::Value) -> Option<Option<f64>>,
) -> Result<Topology, TopologyError> {
    let nodes = match json["nodes"].as_array() {
        Some(nodes) => nodes.as_slice(),
        None if implicit == Implicit::Create && json.get("nodes").is_none() => &[],
        None => return Err(content(format!("{format} needs a \"nodes\" list"))),
    };
    let mut t = Topology::default();
    let mut index = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let name = id_text(&node["id"]).ok_or_else(|| content(format!("node {i} has no id")))?;
        index.insert(name.clone(), i);
        t.nodes.push(NodeInfo {
            name,
            position: None,
        });
    }
    let links = json["links"]
        .as_array()
        .ok_or_else(|| content(format!("{format} needs a \"links\" list")))?;
    let mut seen = HashSet::new();
    for (i, link) in links.iter().enumerate() {
        let Some(q) = quality(link) else {
            continue;
        };
        if implicit == Implicit::Create {
            for field in ["source", "target"] {
                let name = id_text(&link[field])
                    .ok_or_else(|| content(format!("link {i} has no {field}")))?;
                if !index.contains_key(&name) {
                    index.insert(name.clone(), t.nodes.len());
                    t.nodes.push(NodeInfo {
                        name,
                        position: None,
                    });
                }
            }
        }
        let (a, b) = endpoints(&index, link, i)?;
        if let Some(e) = t.link(&mut seen, a, b) {
            e.quality = q;
        }
    }
    Ok(t)
}

fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn endpoints(
    index: &HashMap<String, usize>,
    link: &serde_json::Value,
    i: usize,
) -> Result<(usize, usize), TopologyError> {
    let end = |field: &str| -> Result<usize, TopologyError> {
        let id =
            id_text(&link[field]).ok_or_else(|| content(format!("link {i} has no {field}")))?;
        index
            .get(&id)
            .copied()
            .ok_or_else(|| content(format!("link {i} names unknown node {id:?}")))
    };
    Ok((end("source")?, end("target")?))
}

/// Distance in metres between two positions of the same kind (a plane
/// distance, or great-circle for degrees).
pub fn distance_m(p: Position, q: Position) -> f64 {
    match (p, q) {
        (Position::Plane { x: x1, y: y1 }, Position::Plane { x: x2, y: y2 }) => {
            ((x1 - x2).powi(2) + (y1 - y2).powi(2)).sqrt()
        }
        (Position::Geo { lat: la1, lon: lo1 }, Position::Geo { lat: la2, lon: lo2 }) => {
            let (la1, lo1, la2, lo2) = (
                la1.to_radians(),
                lo1.to_radians(),
                la2.to_radians(),
                lo2.to_radians(),
            );
            let h = ((la2 - la1) / 2.0).sin().powi(2)
                + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
            2.0 * 6_371_000.0 * h.sqrt().min(1.0).asin()
        }
        _ => f64::INFINITY,
    }
}

/// Pairs of points within `range` of each other, found through a grid of
/// cells `range` wide (each point is compared with its 3 x 3 cells only).
pub fn geometric_edges(points: &[(f64, f64)], range: f64) -> Vec<Edge> {
    let range = range.max(f64::MIN_POSITIVE);
    let cell = |p: (f64, f64)| ((p.0 / range).floor() as i64, (p.1 / range).floor() as i64);
    let mut cells: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for (i, p) in points.iter().enumerate() {
        cells.entry(cell(*p)).or_default().push(i);
    }
    let mut edges = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let (cx, cy) = cell(*p);
        for dx in -1..=1 {
            for dy in -1..=1 {
                for &j in cells
                    .get(&(cx + dx, cy + dy))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    if j > i {
                        let q = points[j];
                        if (p.0 - q.0).powi(2) + (p.1 - q.1).powi(2) <= range * range {
                            edges.push(Edge {
                                a: i,
                                b: j,
                                latency_ms: None,
                                quality: None,
                            });
                        }
                    }
                }
            }
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generators_make_the_graphs_they_promise() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(Topology::line(5).edges.len(), 4);
        assert_eq!(Topology::grid(4, 3).edges.len(), 3 * 3 + 4 * 2);
        let ba = Topology::barabasi_albert(200, 2, &mut rng);
        // A triangle to start, then two links per new node.
        assert_eq!(ba.edges.len(), 3 + 2 * 197);
        assert_eq!(ba.components().len(), 1);
        let ws = Topology::watts_strogatz(100, 4, 0.1, &mut rng);
        assert!((190..=200).contains(&ws.edges.len()));
        let rgg = Topology::random_geometric(500, 1000.0, 100.0, &mut rng);
        // Check against all pairs.
        let pts: Vec<(f64, f64)> = rgg
            .nodes
            .iter()
            .map(|n| match n.position {
                Some(Position::Plane { x, y }) => (x, y),
                _ => (0.0, 0.0),
            })
            .collect();
        let mut brute = 0;
        for i in 0..pts.len() {
            for j in i + 1..pts.len() {
                if (pts[i].0 - pts[j].0).powi(2) + (pts[i].1 - pts[j].1).powi(2) <= 100.0 * 100.0 {
                    brute += 1;
                }
            }
        }
        assert_eq!(rgg.edges.len(), brute);
    }

    #[test]
    fn components_are_reported_largest_first() {
        let t = Topology::from_edge_list("a b\nb c\n# comment\nx y\n").unwrap();
        let sizes: Vec<usize> = t.components().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 2]);
    }

    /// meshnet-lab's `network.py` creates a node that only a link names;
    /// before, the whole file was refused ("link 1 names unknown node").
    #[test]
    fn meshnet_lab_files_may_name_nodes_only_in_links() {
        let t = Topology::from_meshnet_lab(
            r#"{"nodes":[{"id":"a"},{"id":"b"}],
                "links":[{"source":"a","target":"b"},{"source":"b","target":"vpn1"},
                         {"source":"vpn1","target":"c"}]}"#,
            &[],
        )
        .unwrap();
        let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "vpn1", "c"]);
        assert_eq!(t.adjacency()[2], vec![1, 3]);
        // And the node list may be left out, as in meshnet-lab's README.
        let t = Topology::from_meshnet_lab(
            r#"{"links":[{"source":"a","target":"b"},{"source":"b","target":"c"}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.adjacency()[1], vec![0, 2]);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = Topology::from_edge_list("a\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = Topology::from_netjson(
            r#"{"type":"NetworkGraph","nodes":[{"id":1}],"links":[{"source":1,"target":9}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown node \"9\""), "{e}");
        let e = Topology::from_meshnet_lab(r#"{"links":[{"source":1}]}"#, &[]).unwrap_err();
        assert!(e.to_string().contains("link 0 has no target"), "{e}");
        assert!(Topology::from_graphml("<graphml><node").is_err());
    }
}
