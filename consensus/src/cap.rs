//! OASIS Common Alerting Protocol 1.2 XML: reading an agency's alert into
//! the [`Alert`] the chain carries, and writing one back out.
//!
//! lifeline carries a CAP 1.2 alert as its issuer wrote it: every `<info>`,
//! every `<area>` with all its polygons, circles and geocodes, parameters,
//! event codes, response types and resource descriptions. Two things stay
//! off the chain, and the reader lists them rather than dropping them in
//! silence: a resource's embedded media (`<derefUri>`; its URI and digest are
//! kept) and elements outside CAP 1.2 (an XML signature, extensions). Only
//! Public alerts are carried (the chain is public). Each refusal names the
//! element, its line, and whose rule it is: XML's, CAP's or lifeline's.

use std::fmt;

use lifeline_crypto::Timestamp;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use roxmltree::{Document, Node, ParsingOptions};
use thiserror::Error;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::alert::{
    self, Alert, AlertCategory, AlertCertainty, AlertError, AlertMsgType, AlertResponseType,
    AlertSeverity, AlertStatus, AlertUrgency, CapTime,
};
use crate::wire::pb;

/// CAP 1.2's XML namespace.
pub const CAP_NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// CAP 1.1's, which lifeline refuses with advice on converting.
pub const CAP_1_1_NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.1";
/// Largest CAP file read, embedded media included (the media is dropped;
/// what is stored is bounded by [`alert::MAX_ALERT_LEN`]).
pub const MAX_CAP_LEN: usize = 4 * 1024 * 1024;
/// Most XML nodes in a CAP document.
const MAX_NODES: u32 = 20_000;

/// CAP 1.2's dateTime: seconds, and a numeric offset (UTC is `-00:00`).
const CAP_TIME: &[BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
);

/// Whose rule a document breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// XML's: the document is not well-formed.
    Xml,
    /// The CAP 1.2 standard's.
    Cap,
    /// lifeline's own (sizes, public scope, what the chain can keep).
    Lifeline,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Xml => "XML",
            Self::Cap => "CAP 1.2",
            Self::Lifeline => "lifeline",
        })
    }
}

/// Why a CAP document cannot be published: the element, its line, whose
/// rule, and what is wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("line {line}, <{element}>: {message} (a {rule} rule)")]
pub struct CapError {
    /// The element at fault.
    pub element: String,
    /// Its line (1 for the whole document).
    pub line: u32,
    /// Whose rule it breaks.
    pub rule: Rule,
    /// What is wrong, and what to do.
    pub message: String,
}

impl CapError {
    fn new(element: &str, line: u32, rule: Rule, message: impl Into<String>) -> Self {
        Self {
            element: element.to_owned(),
            line,
            rule,
            message: message.into(),
        }
    }

    /// A chain rule broken by an element (see [`rule_of`]).
    fn chain(element: &str, line: u32, e: AlertError) -> Self {
        Self::new(element, line, rule_of(&e), e.to_string())
    }
}

/// Whose rule an [`AlertError`] is.
pub fn rule_of(e: &AlertError) -> Rule {
    match e {
        AlertError::InvalidText { reason, .. } if reason.starts_with("CAP") => Rule::Cap,
        AlertError::InvalidArea(why) if why.contains("radius") || why.starts_with("altitude") => {
            Rule::Lifeline
        }
        AlertError::Missing(_)
        | AlertError::InvalidEnum(_)
        | AlertError::InvalidArea(_)
        | AlertError::References(_) => Rule::Cap,
        _ => Rule::Lifeline,
    }
}

/// A CAP document read into an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct CapImport {
    /// The alert.
    pub alert: Alert,
    /// What of the document the chain does not keep, one note each (e.g.
    /// "`<derefUri>` (line 40): ...").
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
            .ok_or_else(|| {
                let allowed: Vec<&str> = self.values.iter().map(|(n, _)| *n).collect();
                CapError::new(
                    self.element,
                    line,
                    Rule::Cap,
                    format!("is {value:?}; CAP 1.2 allows {}", allowed.join(", ")),
                )
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

const RESPONSE_TYPE: Enumeration<AlertResponseType> = Enumeration {
    element: "responseType",
    values: &[
        ("Shelter", AlertResponseType::Shelter),
        ("Evacuate", AlertResponseType::Evacuate),
        ("Prepare", AlertResponseType::Prepare),
        ("Execute", AlertResponseType::Execute),
        ("Avoid", AlertResponseType::Avoid),
        ("Monitor", AlertResponseType::Monitor),
        ("Assess", AlertResponseType::Assess),
        ("AllClear", AlertResponseType::AllClear),
        ("None", AlertResponseType::None),
    ],
};

/// The CAP spelling of a response type ("Evacuate").
pub fn response_type_name(r: AlertResponseType) -> &'static str {
    RESPONSE_TYPE.name(r)
}

/// The CAP spelling of a status ("Actual").
pub fn status_name(s: AlertStatus) -> &'static str {
    STATUS.name(s)
}

/// The CAP spelling of a message type ("Update").
pub fn msg_type_name(m: AlertMsgType) -> &'static str {
    MSG_TYPE.name(m)
}

/// The CAP spelling of an urgency ("Immediate").
pub fn urgency_name(u: AlertUrgency) -> &'static str {
    URGENCY.name(u)
}

/// The CAP spelling of a certainty ("Observed").
pub fn certainty_name(c: AlertCertainty) -> &'static str {
    CERTAINTY.name(c)
}

/// The elements CAP 1.2 defines in each parent, in the schema's order.
const ALERT_ELEMENTS: &[&str] = &[
    "identifier",
    "sender",
    "sent",
    "status",
    "msgType",
    "source",
    "scope",
    "restriction",
    "addresses",
    "code",
    "note",
    "references",
    "incidents",
    "info",
];
const INFO_ELEMENTS: &[&str] = &[
    "language",
    "category",
    "event",
    "responseType",
    "urgency",
    "severity",
    "certainty",
    "audience",
    "eventCode",
    "effective",
    "onset",
    "expires",
    "senderName",
    "headline",
    "description",
    "instruction",
    "web",
    "contact",
    "parameter",
    "resource",
    "area",
];
const RESOURCE_ELEMENTS: &[&str] = &[
    "resourceDesc",
    "mimeType",
    "size",
    "uri",
    "derefUri",
    "digest",
];
const AREA_ELEMENTS: &[&str] = &[
    "areaDesc", "polygon", "circle", "geocode", "altitude", "ceiling",
];
const VALUE_ELEMENTS: &[&str] = &["valueName", "value"];

/// One element's children, by name, with line numbers for errors.
struct Children<'a, 'input> {
    doc: &'a Document<'input>,
    parent: &'static str,
    line: u32,
    nodes: Vec<Node<'a, 'input>>,
}

impl<'a, 'input> Children<'a, 'input> {
    /// The CAP children of `node`; any other element is noted in
    /// `not_carried`.
    fn of(
        doc: &'a Document<'input>,
        node: Node<'a, 'input>,
        parent: &'static str,
        known: &[&str],
        not_carried: &mut Vec<String>,
    ) -> Self {
        let mut nodes = Vec::new();
        for n in node.children().filter(Node::is_element) {
            let name = n.tag_name().name();
            if n.tag_name().namespace() == Some(CAP_NAMESPACE) && known.contains(&name) {
                nodes.push(n);
            } else {
                not_carried.push(format!(
                    "<{name}> (line {}): not a CAP 1.2 element of <{parent}>, so not kept{}",
                    line_of(doc, n),
                    if name == "Signature" {
                        " (lifeline signs the alert with the authority's key)"
                    } else {
                        ""
                    }
                ));
            }
        }
        Self {
            doc,
            parent,
            line: line_of(doc, node),
            nodes,
        }
    }

    fn line(&self, node: Node<'_, '_>) -> u32 {
        line_of(self.doc, node)
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
            return Err(CapError::new(
                name,
                self.line(*second),
                Rule::Cap,
                format!(
                    "appears more than once in <{}>; CAP allows one",
                    self.parent
                ),
            ));
        }
        Ok(found.first().copied())
    }

    fn required(&self, name: &'static str) -> Result<Node<'a, 'input>, CapError> {
        self.optional(name)?.ok_or_else(|| {
            CapError::new(
                name,
                self.line,
                Rule::Cap,
                format!("is required in the <{}> that starts here", self.parent),
            )
        })
    }

    fn text(&self, name: &'static str) -> Result<String, CapError> {
        Ok(text(self.required(name)?))
    }

    fn optional_text(&self, name: &str) -> Result<String, CapError> {
        Ok(self.optional(name)?.map(text).unwrap_or_default())
    }

    fn time(&self, name: &'static str) -> Result<Option<CapTime>, CapError> {
        self.optional(name)?
            .map(|node| parse_time(name, &text(node), self.line(node)))
            .transpose()
    }

    fn enumeration<T: Copy + PartialEq>(&self, e: &Enumeration<T>) -> Result<T, CapError> {
        let node = self.required(e.element)?;
        e.parse(node, self.line(node))
    }

    fn enumerations<T: Copy + PartialEq>(&self, e: &Enumeration<T>) -> Result<Vec<T>, CapError> {
        self.all(e.element)
            .into_iter()
            .map(|node| e.parse(node, self.line(node)))
            .collect()
    }

    fn values(
        &self,
        name: &'static str,
        not_carried: &mut Vec<String>,
    ) -> Result<Vec<pb::CapValue>, CapError> {
        self.all(name)
            .into_iter()
            .map(|node| {
                let pair = Children::of(self.doc, node, name, VALUE_ELEMENTS, not_carried);
                Ok(pb::CapValue {
                    name: pair.text("valueName")?,
                    value: pair.text("value")?,
                })
            })
            .collect()
    }
}

fn line_of(doc: &Document<'_>, node: Node<'_, '_>) -> u32 {
    doc.text_pos_at(node.range().start).row
}

fn text(node: Node<'_, '_>) -> String {
    node.text().unwrap_or("").trim().to_owned()
}

fn parse_time(element: &'static str, value: &str, line: u32) -> Result<CapTime, CapError> {
    let at = OffsetDateTime::parse(value, CAP_TIME).map_err(|_| {
        CapError::new(
            element,
            line,
            Rule::Cap,
            format!(
                "{value:?} is not a CAP time; write it like 2026-11-21T14:30:00-05:00 \
                 (seconds, a numeric offset, UTC written -00:00, no Z)"
            ),
        )
    })?;
    let out_of_range = || {
        CapError::new(
            element,
            line,
            Rule::Lifeline,
            format!("{value:?} is before 1970; lifeline keeps times from 1970 on"),
        )
    };
    let secs = u64::try_from(at.unix_timestamp()).map_err(|_| out_of_range())?;
    Ok(CapTime {
        at: Timestamp::from_unix_millis(secs.saturating_mul(1000)),
        offset_minutes: at.offset().whole_minutes(),
    })
}

/// A time in CAP 1.2's form, in UTC (`-00:00`).
pub fn format_time(at: Timestamp) -> String {
    format_cap_time(&CapTime::utc(at))
}

/// A time in CAP 1.2's form, with the offset it was written with.
pub fn format_cap_time(t: &CapTime) -> String {
    let secs = i64::try_from(t.at.as_unix_millis() / 1000).unwrap_or(i64::MAX);
    let offset =
        UtcOffset::from_whole_seconds(i32::from(t.offset_minutes) * 60).unwrap_or(UtcOffset::UTC);
    let local = OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|utc| utc.checked_to_offset(offset));
    match local {
        Some(local) => {
            let minutes = t.offset_minutes.unsigned_abs();
            // CAP writes UTC as -00:00.
            let sign = if t.offset_minutes > 0 { '+' } else { '-' };
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
                local.year(),
                u8::from(local.month()),
                local.day(),
                local.hour(),
                local.minute(),
                local.second(),
                minutes / 60,
                minutes % 60
            )
        }
        None => "9999-12-31T23:59:59-00:00".to_owned(),
    }
}

fn parse_point(pair: &str) -> Option<pb::Point> {
    let (lat, lon) = pair.split_once(',')?;
    Some(pb::Point {
        lat: lat.trim().parse().ok()?,
        lon: lon.trim().parse().ok()?,
    })
}

fn parse_area(
    c: &Children<'_, '_>,
    not_carried: &mut Vec<String>,
) -> Result<pb::CapArea, CapError> {
    let description = c.text("areaDesc")?;
    let mut polygons = Vec::new();
    for node in c.all("polygon") {
        let line = c.line(node);
        let points = text(node)
            .split_whitespace()
            .map(|pair| {
                parse_point(pair).ok_or_else(|| {
                    CapError::new(
                        "polygon",
                        line,
                        Rule::Cap,
                        format!("{pair:?} is not a \"lat,lon\" pair"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        polygons.push(pb::Polygon { points });
    }
    let mut circles = Vec::new();
    for node in c.all("circle") {
        let line = c.line(node);
        let value = text(node);
        let bad = |reason: &str| CapError::new("circle", line, Rule::Cap, reason);
        let (centre, radius) = value
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("write \"lat,lon radius-in-km\""))?;
        let center = parse_point(centre).ok_or_else(|| bad("the centre is not \"lat,lon\""))?;
        let radius_km = radius
            .trim()
            .parse()
            .map_err(|_| bad("the radius is not a number of kilometres"))?;
        circles.push(pb::Circle {
            center: Some(center),
            radius_km,
        });
    }
    let number = |name: &'static str| -> Result<Option<f64>, CapError> {
        c.optional(name)?
            .map(|node| {
                text(node).parse::<f64>().map_err(|_| {
                    CapError::new(name, c.line(node), Rule::Cap, "is not a number of feet")
                })
            })
            .transpose()
    };
    Ok(pb::CapArea {
        description,
        polygons,
        circles,
        geocodes: c.values("geocode", not_carried)?,
        altitude: number("altitude")?,
        ceiling: number("ceiling")?,
    })
}

fn parse_resource(
    c: &Children<'_, '_>,
    not_carried: &mut Vec<String>,
) -> Result<pb::CapResource, CapError> {
    if let Some(node) = c.optional("derefUri")? {
        not_carried.push(format!(
            "<derefUri> (line {}): the embedded media ({} characters) stays off the chain; \
             its <uri> and <digest> are kept",
            c.line(node),
            text(node).len()
        ));
    }
    let size = c
        .optional("size")?
        .map(|node| {
            text(node).parse::<u64>().map_err(|_| {
                CapError::new(
                    "size",
                    c.line(node),
                    Rule::Cap,
                    "is not a whole number of bytes",
                )
            })
        })
        .transpose()?;
    Ok(pb::CapResource {
        description: c.text("resourceDesc")?,
        mime_type: c.text("mimeType")?,
        size,
        uri: c.optional_text("uri")?,
        digest: c.optional_text("digest")?,
    })
}

fn parse_info(
    c: &Children<'_, '_>,
    not_carried: &mut Vec<String>,
) -> Result<pb::CapInfo, CapError> {
    let categories = c.enumerations(&CATEGORY)?;
    if categories.is_empty() {
        c.required("category")?;
    }
    let mut resources = Vec::new();
    for node in c.all("resource") {
        let children = Children::of(c.doc, node, "resource", RESOURCE_ELEMENTS, not_carried);
        resources.push(parse_resource(&children, not_carried)?);
    }
    let mut areas = Vec::new();
    for node in c.all("area") {
        let children = Children::of(c.doc, node, "area", AREA_ELEMENTS, not_carried);
        let area = parse_area(&children, not_carried)?;
        // The chain's checks, with this area's line.
        alert::check_area(area.clone()).map_err(|e| CapError::chain("area", c.line(node), e))?;
        areas.push(area);
    }
    let info = pb::CapInfo {
        language: c.optional_text("language")?,
        categories: categories.into_iter().map(Into::into).collect(),
        event: c.text("event")?,
        response_types: c
            .enumerations(&RESPONSE_TYPE)?
            .into_iter()
            .map(Into::into)
            .collect(),
        urgency: c.enumeration(&URGENCY)?.into(),
        severity: c.enumeration(&SEVERITY)?.into(),
        certainty: c.enumeration(&CERTAINTY)?.into(),
        audience: c.optional_text("audience")?,
        event_codes: c.values("eventCode", not_carried)?,
        effective: c.time("effective")?.as_ref().map(alert::cap_time_pb),
        onset: c.time("onset")?.as_ref().map(alert::cap_time_pb),
        expires: c.time("expires")?.as_ref().map(alert::cap_time_pb),
        sender_name: c.optional_text("senderName")?,
        headline: c.optional_text("headline")?,
        description: c.optional_text("description")?,
        instruction: c.optional_text("instruction")?,
        web: c.optional_text("web")?,
        contact: c.optional_text("contact")?,
        parameters: c.values("parameter", not_carried)?,
        resources,
        areas,
    };
    alert::check_info(info.clone()).map_err(|e| CapError::chain("info", c.line, e))?;
    Ok(info)
}

/// Reads a CAP 1.2 `<alert>` document. The result is validated as the
/// chain will validate it.
pub fn from_cap_xml(xml: &str) -> Result<CapImport, CapError> {
    if xml.len() > MAX_CAP_LEN {
        return Err(CapError::new(
            "alert",
            1,
            Rule::Lifeline,
            format!(
                "the file is {} bytes; lifeline reads CAP files of at most {} MiB, embedded \
                 media included (the media itself is not kept)",
                xml.len(),
                MAX_CAP_LEN >> 20
            ),
        ));
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let doc = Document::parse_with_options(xml, options).map_err(|e| {
        CapError::new(
            "alert",
            e.pos().row,
            Rule::Xml,
            format!("not well-formed XML: {e}"),
        )
    })?;
    let root = doc.root_element();
    let root_line = line_of(&doc, root);
    if root.tag_name().name() != "alert" {
        return Err(CapError::new(
            root.tag_name().name(),
            root_line,
            Rule::Cap,
            "the document is not a CAP <alert>",
        ));
    }
    match root.tag_name().namespace() {
        Some(CAP_NAMESPACE) => {}
        Some(CAP_1_1_NAMESPACE) => {
            return Err(CapError::new(
                "alert",
                root_line,
                Rule::Lifeline,
                format!(
                    "this is CAP 1.1; lifeline publishes CAP 1.2. CAP 1.2 reads a 1.1 alert the \
                     same way: change the namespace to {CAP_NAMESPACE}, and give every \
                     <resource> a <mimeType> (required since 1.2)"
                ),
            ));
        }
        other => {
            return Err(CapError::new(
                "alert",
                root_line,
                Rule::Cap,
                format!(
                    "the <alert> is in namespace {:?}; a CAP 1.2 alert is in {CAP_NAMESPACE}",
                    other.unwrap_or("")
                ),
            ));
        }
    }
    let mut not_carried = Vec::new();
    let a = Children::of(&doc, root, "alert", ALERT_ELEMENTS, &mut not_carried);

    let scope = a.required("scope")?;
    if text(scope) != "Public" {
        let rule = if ["Restricted", "Private"].contains(&text(scope).as_str()) {
            Rule::Lifeline
        } else {
            Rule::Cap
        };
        return Err(CapError::new(
            "scope",
            a.line(scope),
            rule,
            format!(
                "is {:?}; lifeline's chain is public, so it carries only Public alerts",
                text(scope)
            ),
        ));
    }
    // CAP references: "sender,identifier,sent" triples, separated by spaces.
    let mut references = Vec::new();
    if let Some(node) = a.optional("references")? {
        for triple in text(node).split_whitespace() {
            let parts: Vec<&str> = triple.split(',').collect();
            let [sender, identifier, sent] = parts.as_slice() else {
                return Err(CapError::new(
                    "references",
                    a.line(node),
                    Rule::Cap,
                    format!(
                        "{triple:?} is not a \"sender,identifier,sent\" triple (triples are \
                         separated by spaces)"
                    ),
                ));
            };
            references.push(pb::CapReference {
                sender: (*sender).to_owned(),
                identifier: (*identifier).to_owned(),
                sent: Some(alert::cap_time_pb(&parse_time(
                    "references",
                    sent,
                    a.line(node),
                )?)),
            });
        }
    }
    let mut infos = Vec::new();
    for node in a.all("info") {
        let children = Children::of(&doc, node, "info", INFO_ELEMENTS, &mut not_carried);
        infos.push(parse_info(&children, &mut not_carried)?);
    }
    let sent = a.required("sent")?;
    let cap = pb::CapAlert {
        identifier: a.text("identifier")?,
        sender: a.text("sender")?,
        sent: Some(alert::cap_time_pb(&parse_time(
            "sent",
            &text(sent),
            a.line(sent),
        )?)),
        status: a.enumeration(&STATUS)?.into(),
        msg_type: a.enumeration(&MSG_TYPE)?.into(),
        source: a.optional_text("source")?,
        codes: a.all("code").into_iter().map(text).collect(),
        note: a.optional_text("note")?,
        references,
        incidents: a.optional_text("incidents")?,
        infos,
    };
    let element = |e: &AlertError| match e {
        AlertError::InvalidText { field, .. } | AlertError::Missing(field) => *field,
        AlertError::References(_) => "references",
        _ => "alert",
    };
    let alert = Alert::from_cap_pb(cap).map_err(|e| {
        let name = element(&e);
        let line = a
            .optional(name)
            .ok()
            .flatten()
            .map_or(root_line, |n| a.line(n));
        CapError::chain(name, line, e)
    })?;
    Ok(CapImport { alert, not_carried })
}

/// What a reference to an earlier alert needs in CAP when the alert does
/// not name it (an alert of the first form): its sender and sent time.
pub type ReferenceLookup<'a> = &'a dyn Fn(&str) -> Option<(String, Timestamp)>;

/// Writes `alert` as a CAP 1.2 document. `lookup` gives the sender and sent
/// time of each alert a first-form alert refers to; one it cannot find is
/// written with this alert's sender and time.
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

fn optional(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> std::io::Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    element(w, name, value)
}

fn start(w: &mut Writer<Vec<u8>>, name: &str) -> std::io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(name)))
}

fn end(w: &mut Writer<Vec<u8>>, name: &str) -> std::io::Result<()> {
    w.write_event(Event::End(BytesEnd::new(name)))
}

fn values(
    w: &mut Writer<Vec<u8>>,
    name: &str,
    values: &[alert::NamedValue],
) -> std::io::Result<()> {
    for v in values {
        start(w, name)?;
        element(w, "valueName", &v.name)?;
        element(w, "value", &v.value)?;
        end(w, name)?;
    }
    Ok(())
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
    element(w, "sent", &format_cap_time(&a.sent))?;
    element(w, "status", STATUS.name(a.status))?;
    element(w, "msgType", MSG_TYPE.name(a.msg_type))?;
    optional(w, "source", &a.source)?;
    element(w, "scope", "Public")?;
    for code in &a.codes {
        element(w, "code", code)?;
    }
    optional(w, "note", &a.note)?;
    if !a.references.is_empty() {
        let triples: Vec<String> = a
            .references
            .iter()
            .map(|r| match r.sent {
                Some(sent) => format!("{},{},{}", r.sender, r.identifier, format_cap_time(&sent)),
                None => {
                    let (sender, sent) =
                        lookup(&r.identifier).unwrap_or_else(|| (a.sender.clone(), a.sent.at));
                    format!("{sender},{},{}", r.identifier, format_time(sent))
                }
            })
            .collect();
        element(w, "references", &triples.join(" "))?;
    }
    optional(w, "incidents", &a.incidents)?;
    for info in &a.infos {
        write_info(w, info)?;
    }
    end(w, "alert")?;
    w.get_mut().push(b'\n');
    Ok(())
}

fn write_info(w: &mut Writer<Vec<u8>>, i: &alert::Info) -> std::io::Result<()> {
    start(w, "info")?;
    optional(w, "language", &i.language)?;
    for &c in &i.categories {
        element(w, "category", CATEGORY.name(c))?;
    }
    element(w, "event", &i.event)?;
    for &r in &i.response_types {
        element(w, "responseType", RESPONSE_TYPE.name(r))?;
    }
    element(w, "urgency", URGENCY.name(i.urgency))?;
    element(w, "severity", SEVERITY.name(i.severity))?;
    element(w, "certainty", CERTAINTY.name(i.certainty))?;
    optional(w, "audience", &i.audience)?;
    values(w, "eventCode", &i.event_codes)?;
    for (name, t) in [
        ("effective", &i.effective),
        ("onset", &i.onset),
        ("expires", &i.expires),
    ] {
        if let Some(t) = t {
            element(w, name, &format_cap_time(t))?;
        }
    }
    for (name, value) in [
        ("senderName", &i.sender_name),
        ("headline", &i.headline),
        ("description", &i.description),
        ("instruction", &i.instruction),
        ("web", &i.web),
        ("contact", &i.contact),
    ] {
        optional(w, name, value)?;
    }
    values(w, "parameter", &i.parameters)?;
    for r in &i.resources {
        start(w, "resource")?;
        element(w, "resourceDesc", &r.description)?;
        element(w, "mimeType", &r.mime_type)?;
        if let Some(size) = r.size {
            element(w, "size", &size.to_string())?;
        }
        optional(w, "uri", &r.uri)?;
        optional(w, "digest", &r.digest)?;
        end(w, "resource")?;
    }
    for area in &i.areas {
        start(w, "area")?;
        element(w, "areaDesc", &area.description)?;
        for ring in &area.polygons {
            let pairs: Vec<String> = ring
                .iter()
                .map(|p| format!("{},{}", p.lat, p.lon))
                .collect();
            element(w, "polygon", &pairs.join(" "))?;
        }
        for c in &area.circles {
            element(
                w,
                "circle",
                &format!("{},{} {}", c.center.lat, c.center.lon, c.radius_km),
            )?;
        }
        values(w, "geocode", &area.geocodes)?;
        if let Some(x) = area.altitude {
            element(w, "altitude", &x.to_string())?;
        }
        if let Some(x) = area.ceiling {
            element(w, "ceiling", &x.to_string())?;
        }
        end(w, "area")?;
    }
    end(w, "info")
}

/// Elements whose text is a CAP time, compared as instants.
const TIME_ELEMENTS: &[&str] = &["sent", "effective", "onset", "expires"];
/// Elements whose text is numbers, compared as numbers.
const NUMBER_ELEMENTS: &[&str] = &["polygon", "circle", "altitude", "ceiling", "size"];

/// A CAP document as a list of (path, value) pairs, for comparing two
/// documents field by field the way a CAP consumer reads them: times as
/// instants (their spelling and offset aside), numbers as numbers, texts
/// trimmed, and siblings of one name in their order. `<derefUri>` (media
/// lifeline does not keep) and elements outside CAP 1.2 are left out.
pub fn cap_fields(xml: &str) -> Result<Vec<(String, String)>, CapError> {
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let doc = Document::parse_with_options(xml, options).map_err(|e| {
        CapError::new(
            "alert",
            e.pos().row,
            Rule::Xml,
            format!("not well-formed XML: {e}"),
        )
    })?;
    let mut out = Vec::new();
    fields_of(&doc, doc.root_element(), "alert", &mut out)?;
    Ok(out)
}

fn fields_of(
    doc: &Document<'_>,
    node: Node<'_, '_>,
    path: &str,
    out: &mut Vec<(String, String)>,
) -> Result<(), CapError> {
    let children: Vec<Node<'_, '_>> = node
        .children()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(CAP_NAMESPACE))
        .filter(|n| n.tag_name().name() != "derefUri")
        .collect();
    if children.is_empty() {
        let name = node.tag_name().name();
        let value = text(node);
        let line = line_of(doc, node);
        let value = if let Some(element) = TIME_ELEMENTS.iter().find(|e| **e == name) {
            parse_time(element, &value, line)?
                .at
                .as_unix_millis()
                .to_string()
        } else if name == "references" {
            let mut triples = Vec::new();
            for triple in value.split_whitespace() {
                let parts: Vec<&str> = triple.split(',').collect();
                let [sender, identifier, sent] = parts.as_slice() else {
                    return Err(CapError::new("references", line, Rule::Cap, "not a triple"));
                };
                let at = parse_time("references", sent, line)?.at.as_unix_millis();
                triples.push(format!("{sender},{identifier},{at}"));
            }
            triples.join(" ")
        } else if NUMBER_ELEMENTS.contains(&name) {
            value
                .split([' ', ',', '\n', '\t', '\r'])
                .filter(|s| !s.is_empty())
                .map(|n| {
                    n.parse::<f64>()
                        .map_or_else(|_| n.to_owned(), |x| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            value
        };
        out.push((path.to_owned(), value));
        return Ok(());
    }
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for child in children {
        let name = child.tag_name().name();
        let index = match seen.iter_mut().find(|(n, _)| *n == name) {
            Some((_, i)) => {
                *i += 1;
                *i
            }
            None => {
                seen.push((name, 0));
                0
            }
        };
        fields_of(doc, child, &format!("{path}/{name}[{index}]"), out)?;
    }
    Ok(())
}
