//! OASIS Common Alerting Protocol 1.2 XML: reading an agency's alert into
//! the [`Alert`] the chain carries, and writing one back out.
//!
//! lifeline carries one `<info>` block with one `<area>` of one shape, in
//! public scope. Everything CAP requires is checked (elements, their order
//! aside; enumerations; the CAP time format), and what lifeline does not
//! carry (`<parameter>`, `<resource>`, ...) is listed so that the caller can
//! say so, rather than being dropped in silence.

use lifeline_crypto::Timestamp;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use roxmltree::{Document, Node, ParsingOptions};
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use crate::alert::{
    Alert, AlertCategory, AlertCertainty, AlertError, AlertMsgType, AlertSeverity, AlertStatus,
    AlertUrgency, Area, Point, Shape,
};

/// CAP 1.2's XML namespace.
pub const CAP_NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// Largest CAP document read.
pub const MAX_CAP_LEN: usize = 256 * 1024;
/// Most XML nodes in a CAP document.
const MAX_NODES: u32 = 20_000;

/// CAP 1.2's dateTime: seconds, and a numeric offset (UTC is `-00:00`).
const CAP_TIME: &[BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
);

/// Why a CAP document cannot be published.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CapError {
    /// Over [`MAX_CAP_LEN`].
    #[error("the file is {0} bytes; a CAP alert lifeline publishes is at most 256 KiB")]
    TooLarge(usize),
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// Not a CAP 1.2 alert.
    #[error("{0}")]
    NotCap(String),
    /// A required element is missing.
    #[error("<{element}> is required in <{parent}> (line {line})")]
    Missing {
        /// The element.
        element: &'static str,
        /// Where it belongs.
        parent: &'static str,
        /// The parent's line.
        line: u32,
    },
    /// An element that may appear once appears again.
    #[error("<{element}> appears more than once (line {line})")]
    Repeated {
        /// The element.
        element: String,
        /// The second one's line.
        line: u32,
    },
    /// A value outside CAP's enumeration.
    #[error("<{element}> is {value:?} (line {line}); CAP 1.2 allows {allowed}")]
    BadValue {
        /// The element.
        element: &'static str,
        /// What it holds.
        value: String,
        /// The values allowed.
        allowed: String,
        /// Its line.
        line: u32,
    },
    /// Not a CAP time.
    #[error(
        "<{element}> is {value:?} (line {line}); a CAP 1.2 time looks like \
         2026-11-21T14:30:00-05:00 (seconds, a numeric offset, UTC written -00:00, no Z)"
    )]
    BadTime {
        /// The element.
        element: &'static str,
        /// What it holds.
        value: String,
        /// Its line.
        line: u32,
    },
    /// A polygon or circle that does not parse.
    #[error("<{element}> is not valid (line {line}): {reason}")]
    BadArea {
        /// polygon or circle.
        element: &'static str,
        /// What is wrong.
        reason: String,
        /// Its line.
        line: u32,
    },
    /// Valid CAP that lifeline does not carry.
    #[error("{0}")]
    Unsupported(String),
    /// The fields do not make a valid alert.
    #[error("{0}")]
    Invalid(#[from] AlertError),
}

/// A CAP document read into an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct CapImport {
    /// The alert.
    pub alert: Alert,
    /// CAP elements present in the document that lifeline does not carry.
    pub not_carried: Vec<String>,
}

/// A CAP enumeration: its XML spellings and values.
struct Enumeration<T: 'static> {
    element: &'static str,
    values: &'static [(&'static str, T)],
}

impl<T: Copy + PartialEq> Enumeration<T> {
    fn parse(&self, node: Node<'_, '_>, line: u32) -> Result<T, CapError> {
        let value = node.text().unwrap_or("").trim();
        self.values
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, v)| *v)
            .ok_or_else(|| CapError::BadValue {
                element: self.element,
                value: value.to_owned(),
                allowed: self
                    .values
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
                line,
            })
    }

    fn name(&self, value: T) -> &'static str {
        self.values
            .iter()
            .find(|(_, v)| *v == value)
            .map_or("Unknown", |(n, _)| n)
    }
}

const STATUS: Enumeration<AlertStatus> = Enumeration {
    element: "status",
    values: &[
        ("Actual", AlertStatus::Actual),
        ("Exercise", AlertStatus::Exercise),
        ("System", AlertStatus::System),
        ("Test", AlertStatus::Test),
        ("Draft", AlertStatus::Draft),
    ],
};
const MSG_TYPE: Enumeration<AlertMsgType> = Enumeration {
    element: "msgType",
    values: &[
        ("Alert", AlertMsgType::Alert),
        ("Update", AlertMsgType::Update),
        ("Cancel", AlertMsgType::Cancel),
        ("Ack", AlertMsgType::Ack),
        ("Error", AlertMsgType::Error),
    ],
};
/// Scopes: lifeline's chain is public, so only Public is carried.
const SCOPE: Enumeration<bool> = Enumeration {
    element: "scope",
    values: &[("Public", true), ("Restricted", false), ("Private", false)],
};
const CATEGORY: Enumeration<AlertCategory> = Enumeration {
    element: "category",
    values: &[
        ("Geo", AlertCategory::Geo),
        ("Met", AlertCategory::Met),
        ("Safety", AlertCategory::Safety),
        ("Security", AlertCategory::Security),
        ("Rescue", AlertCategory::Rescue),
        ("Fire", AlertCategory::Fire),
        ("Health", AlertCategory::Health),
        ("Env", AlertCategory::Env),
        ("Transport", AlertCategory::Transport),
        ("Infra", AlertCategory::Infra),
        ("CBRNE", AlertCategory::Cbrne),
        ("Other", AlertCategory::Other),
    ],
};
const URGENCY: Enumeration<AlertUrgency> = Enumeration {
    element: "urgency",
    values: &[
        ("Immediate", AlertUrgency::Immediate),
        ("Expected", AlertUrgency::Expected),
        ("Future", AlertUrgency::Future),
        ("Past", AlertUrgency::Past),
        ("Unknown", AlertUrgency::Unknown),
    ],
};
const SEVERITY: Enumeration<AlertSeverity> = Enumeration {
    element: "severity",
    values: &[
        ("Extreme", AlertSeverity::Extreme),
        ("Severe", AlertSeverity::Severe),
        ("Moderate", AlertSeverity::Moderate),
        ("Minor", AlertSeverity::Minor),
        ("Unknown", AlertSeverity::Unknown),
    ],
};
const CERTAINTY: Enumeration<AlertCertainty> = Enumeration {
    element: "certainty",
    values: &[
        ("Observed", AlertCertainty::Observed),
        ("Likely", AlertCertainty::Likely),
        ("Possible", AlertCertainty::Possible),
        ("Unlikely", AlertCertainty::Unlikely),
        ("Unknown", AlertCertainty::Unknown),
    ],
};

/// The CAP spelling of a severity ("Severe").
pub fn severity_name(s: AlertSeverity) -> &'static str {
    SEVERITY.name(s)
}

/// The CAP spelling of a category ("Met").
pub fn category_name(c: AlertCategory) -> &'static str {
    CATEGORY.name(c)
}

/// Elements of `<alert>`, `<info>` and `<area>` that lifeline reads.
const ALERT_READ: &[&str] = &[
    "identifier",
    "sender",
    "sent",
    "status",
    "msgType",
    "scope",
    "references",
    "info",
];
const INFO_READ: &[&str] = &[
    "category",
    "event",
    "urgency",
    "severity",
    "certainty",
    "expires",
    "headline",
    "description",
    "instruction",
    "area",
];
const AREA_READ: &[&str] = &["areaDesc", "polygon", "circle"];

/// One element's children, by name, with line numbers for errors.
struct Children<'a, 'input> {
    doc: &'a Document<'input>,
    parent: &'static str,
    line: u32,
    nodes: Vec<Node<'a, 'input>>,
}

impl<'a, 'input> Children<'a, 'input> {
    fn of(
        doc: &'a Document<'input>,
        node: Node<'a, 'input>,
        parent: &'static str,
        read: &[&str],
        not_carried: &mut Vec<String>,
    ) -> Self {
        let nodes: Vec<Node<'a, 'input>> = node
            .children()
            .filter(|n| n.is_element() && n.tag_name().namespace() == Some(CAP_NAMESPACE))
            .collect();
        for n in &nodes {
            let name = n.tag_name().name();
            if !read.contains(&name) {
                let label = format!("<{name}>");
                if !not_carried.contains(&label) {
                    not_carried.push(label);
                }
            }
        }
        Self {
            doc,
            parent,
            line: line_of(doc, node),
            nodes,
        }
    }

    fn all(&self, name: &str) -> Vec<Node<'a, 'input>> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| n.tag_name().name() == name)
            .collect()
    }

    fn optional(&self, name: &str) -> Result<Option<Node<'a, 'input>>, CapError> {
        let found = self.all(name);
        if let Some(second) = found.get(1) {
            return Err(CapError::Repeated {
                element: name.to_owned(),
                line: line_of(self.doc, *second),
            });
        }
        Ok(found.first().copied())
    }

    fn required(&self, name: &'static str) -> Result<Node<'a, 'input>, CapError> {
        self.optional(name)?.ok_or(CapError::Missing {
            element: name,
            parent: self.parent,
            line: self.line,
        })
    }

    fn text(&self, name: &'static str) -> Result<String, CapError> {
        Ok(text(self.required(name)?))
    }

    fn optional_text(&self, name: &str) -> Result<String, CapError> {
        Ok(self.optional(name)?.map(text).unwrap_or_default())
    }

    fn time(&self, name: &'static str) -> Result<Timestamp, CapError> {
        let node = self.required(name)?;
        parse_time(name, &text(node), line_of(self.doc, node))
    }
}

fn line_of(doc: &Document<'_>, node: Node<'_, '_>) -> u32 {
    doc.text_pos_at(node.range().start).row
}

fn text(node: Node<'_, '_>) -> String {
    node.text().unwrap_or("").trim().to_owned()
}

fn parse_time(element: &'static str, value: &str, line: u32) -> Result<Timestamp, CapError> {
    let bad = || CapError::BadTime {
        element,
        value: value.to_owned(),
        line,
    };
    let at = OffsetDateTime::parse(value, CAP_TIME).map_err(|_| bad())?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    let ms = u64::try_from(ms).map_err(|_| bad())?;
    Ok(Timestamp::from_unix_millis(ms))
}

/// A time in CAP 1.2's form, in UTC (`-00:00`).
pub fn format_time(at: Timestamp) -> String {
    let secs = i64::try_from(at.as_unix_millis() / 1000).unwrap_or(i64::MAX);
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}-00:00",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "9999-12-31T23:59:59-00:00".to_owned(),
    }
}

fn parse_point(pair: &str) -> Option<Point> {
    let (lat, lon) = pair.split_once(',')?;
    Some(Point {
        lat: lat.trim().parse().ok()?,
        lon: lon.trim().parse().ok()?,
    })
}

fn parse_area(doc: &Document<'_>, children: &Children<'_, '_>) -> Result<Area, CapError> {
    let description = children.text("areaDesc")?;
    let polygons = children.all("polygon");
    let circles = children.all("circle");
    let shape = match (polygons.as_slice(), circles.as_slice()) {
        ([polygon], []) => {
            let line = line_of(doc, *polygon);
            let points = text(*polygon)
                .split_whitespace()
                .map(|pair| {
                    parse_point(pair).ok_or_else(|| CapError::BadArea {
                        element: "polygon",
                        reason: format!("{pair:?} is not a \"lat,lon\" pair"),
                        line,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Shape::Polygon(points)
        }
        ([], [circle]) => {
            let line = line_of(doc, *circle);
            let value = text(*circle);
            let bad = |reason: &str| CapError::BadArea {
                element: "circle",
                reason: reason.to_owned(),
                line,
            };
            let (centre, radius) = value
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("write \"lat,lon radius-in-km\""))?;
            let center = parse_point(centre).ok_or_else(|| bad("the centre is not \"lat,lon\""))?;
            let radius_km = radius
                .trim()
                .parse()
                .map_err(|_| bad("the radius is not a number of kilometres"))?;
            Shape::Circle { center, radius_km }
        }
        ([], []) => {
            return Err(CapError::Unsupported(format!(
                "the <area> on line {} has no <polygon> or <circle>; lifeline needs a shape \
                 to tell who is inside (geocodes alone are not carried)",
                children.line
            )));
        }
        _ => {
            return Err(CapError::Unsupported(format!(
                "the <area> on line {} has several shapes; lifeline carries one polygon or \
                 one circle per alert",
                children.line
            )));
        }
    };
    Ok(Area { description, shape })
}

/// Reads a CAP 1.2 `<alert>` document. The result is validated as the
/// chain will validate it.
pub fn from_cap_xml(xml: &str) -> Result<CapImport, CapError> {
    if xml.len() > MAX_CAP_LEN {
        return Err(CapError::TooLarge(xml.len()));
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let doc =
        Document::parse_with_options(xml, options).map_err(|e| CapError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "alert" {
        return Err(CapError::NotCap(format!(
            "the document is a <{}>, not a CAP <alert>",
            root.tag_name().name()
        )));
    }
    if root.tag_name().namespace() != Some(CAP_NAMESPACE) {
        return Err(CapError::NotCap(format!(
            "the <alert> is in namespace {:?}; lifeline reads CAP 1.2 ({CAP_NAMESPACE})",
            root.tag_name().namespace().unwrap_or("")
        )));
    }
    let mut not_carried = Vec::new();
    let alert = Children::of(&doc, root, "alert", ALERT_READ, &mut not_carried);
    let line = |n: Node<'_, '_>| line_of(&doc, n);

    let identifier = alert.text("identifier")?;
    let sender = alert.text("sender")?;
    let sent = alert.time("sent")?;
    let node = alert.required("status")?;
    let status = STATUS.parse(node, line(node))?;
    let node = alert.required("msgType")?;
    let msg_type = MSG_TYPE.parse(node, line(node))?;
    let node = alert.required("scope")?;
    if !SCOPE.parse(node, line(node))? {
        return Err(CapError::Unsupported(format!(
            "<scope> is {:?} (line {}); lifeline's chain is public, so it carries only \
             Public alerts",
            text(node),
            line(node)
        )));
    }
    // CAP references: "sender,identifier,sent" triples, separated by spaces.
    let mut references = Vec::new();
    if let Some(node) = alert.optional("references")? {
        for triple in text(node).split_whitespace() {
            let parts: Vec<&str> = triple.split(',').collect();
            let [_, identifier, _] = parts.as_slice() else {
                return Err(CapError::BadValue {
                    element: "references",
                    value: triple.to_owned(),
                    allowed: "\"sender,identifier,sent\" triples separated by spaces".into(),
                    line: line(node),
                });
            };
            references.push((*identifier).to_owned());
        }
    }

    let infos = alert.all("info");
    let info = match infos.as_slice() {
        [info] => *info,
        [] => {
            return Err(CapError::Missing {
                element: "info",
                parent: "alert",
                line: alert.line,
            });
        }
        [_, second, ..] => {
            return Err(CapError::Unsupported(format!(
                "the alert has {} <info> blocks (the second on line {}); lifeline carries \
                 one: publish one alert per language",
                infos.len(),
                line(*second)
            )));
        }
    };
    let info = Children::of(&doc, info, "info", INFO_READ, &mut not_carried);
    let mut categories = Vec::new();
    for node in info.all("category") {
        let c = CATEGORY.parse(node, line(node))?;
        if categories.contains(&c) {
            return Err(CapError::Repeated {
                element: format!("category {}", CATEGORY.name(c)),
                line: line(node),
            });
        }
        categories.push(c);
    }
    if categories.is_empty() {
        return Err(CapError::Missing {
            element: "category",
            parent: "info",
            line: info.line,
        });
    }
    let event = info.text("event")?;
    let node = info.required("urgency")?;
    let urgency = URGENCY.parse(node, line(node))?;
    let node = info.required("severity")?;
    let severity = SEVERITY.parse(node, line(node))?;
    let node = info.required("certainty")?;
    let certainty = CERTAINTY.parse(node, line(node))?;
    let expires = match info.optional("expires")? {
        Some(_) => info.time("expires")?,
        None => {
            return Err(CapError::Unsupported(format!(
                "the <info> on line {} has no <expires>; lifeline needs to know when an \
                 alert ends",
                info.line
            )));
        }
    };
    let headline = info.optional_text("headline")?;
    let description = info.optional_text("description")?;
    let instruction = info.optional_text("instruction")?;
    let areas = info.all("area");
    let area = match areas.as_slice() {
        [area] => {
            let children = Children::of(&doc, *area, "area", AREA_READ, &mut not_carried);
            parse_area(&doc, &children)?
        }
        [] => {
            return Err(CapError::Unsupported(format!(
                "the <info> on line {} has no <area>; lifeline alerts cover an area",
                info.line
            )));
        }
        [_, second, ..] => {
            return Err(CapError::Unsupported(format!(
                "the <info> has {} <area> blocks (the second on line {}); lifeline carries one",
                areas.len(),
                line(*second)
            )));
        }
    };
    let alert = Alert {
        identifier,
        sender,
        sent,
        status,
        msg_type,
        references,
        categories,
        event,
        urgency,
        severity,
        certainty,
        headline,
        description,
        instruction,
        area,
        expires,
    };
    // The chain's own checks: lengths, coordinates, references, times.
    let alert = Alert::from_pb(alert.to_pb())?;
    Ok(CapImport { alert, not_carried })
}

/// What a reference to an earlier alert needs in CAP: its sender and sent time.
pub type ReferenceLookup<'a> = &'a dyn Fn(&str) -> Option<(String, Timestamp)>;

/// Writes `alert` as a CAP 1.2 document. `lookup` gives the sender and sent
/// time of each alert it refers to (CAP references name all three); one it
/// cannot find is written with this alert's sender and time.
pub fn to_cap_xml(alert: &Alert, lookup: ReferenceLookup<'_>) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing into a Vec cannot fail.
    let _ = write_alert(&mut w, alert, lookup);
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

fn element(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> std::io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(name)))?;
    w.write_event(Event::Text(BytesText::new(value)))?;
    w.write_event(Event::End(BytesEnd::new(name)))
}

fn write_alert(
    w: &mut Writer<Vec<u8>>,
    a: &Alert,
    lookup: ReferenceLookup<'_>,
) -> std::io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let mut root = BytesStart::new("alert");
    root.push_attribute(("xmlns", CAP_NAMESPACE));
    w.write_event(Event::Start(root))?;
    element(w, "identifier", &a.identifier)?;
    element(w, "sender", &a.sender)?;
    element(w, "sent", &format_time(a.sent))?;
    element(w, "status", STATUS.name(a.status))?;
    element(w, "msgType", MSG_TYPE.name(a.msg_type))?;
    element(w, "scope", "Public")?;
    if !a.references.is_empty() {
        let triples: Vec<String> = a
            .references
            .iter()
            .map(|id| {
                let (sender, sent) = lookup(id).unwrap_or_else(|| (a.sender.clone(), a.sent));
                format!("{sender},{id},{}", format_time(sent))
            })
            .collect();
        element(w, "references", &triples.join(" "))?;
    }
    w.write_event(Event::Start(BytesStart::new("info")))?;
    for &c in &a.categories {
        element(w, "category", CATEGORY.name(c))?;
    }
    element(w, "event", &a.event)?;
    element(w, "urgency", URGENCY.name(a.urgency))?;
    element(w, "severity", SEVERITY.name(a.severity))?;
    element(w, "certainty", CERTAINTY.name(a.certainty))?;
    element(w, "expires", &format_time(a.expires))?;
    for (name, value) in [
        ("headline", &a.headline),
        ("description", &a.description),
        ("instruction", &a.instruction),
    ] {
        if !value.is_empty() {
            element(w, name, value)?;
        }
    }
    w.write_event(Event::Start(BytesStart::new("area")))?;
    element(w, "areaDesc", &a.area.description)?;
    match &a.area.shape {
        Shape::Polygon(points) => {
            let pairs: Vec<String> = points
                .iter()
                .map(|p| format!("{},{}", p.lat, p.lon))
                .collect();
            element(w, "polygon", &pairs.join(" "))?;
        }
        Shape::Circle { center, radius_km } => {
            element(
                w,
                "circle",
                &format!("{},{} {radius_km}", center.lat, center.lon),
            )?;
        }
    }
    w.write_event(Event::End(BytesEnd::new("area")))?;
    w.write_event(Event::End(BytesEnd::new("info")))?;
    w.write_event(Event::End(BytesEnd::new("alert")))?;
    w.get_mut().push(b'\n');
    Ok(())
}
