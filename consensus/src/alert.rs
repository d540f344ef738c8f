//! Official alerts: the fields of an OASIS Common Alerting Protocol (CAP) 1.2
//! alert that lifeline carries, validated before they go on the chain.

use std::time::Duration;

use lifeline_crypto::Timestamp;
use thiserror::Error;

use crate::wire::pb;

/// Longest identifier, sender, event or headline, in characters.
pub const MAX_SHORT_TEXT: usize = 256;
/// Longest description or instruction, in characters.
pub const MAX_LONG_TEXT: usize = 8 * 1024;
/// Most polygon points.
pub const MAX_POLYGON_POINTS: usize = 256;
/// Most references of an Update or Cancel.
pub const MAX_REFERENCES: usize = 16;

pub use pb::{
    AlertCategory, AlertCertainty, AlertMsgType, AlertResponseType, AlertSeverity, AlertStatus,
    AlertUrgency,
};

/// Why an alert is invalid.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AlertError {
    /// A required field is missing or empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A text is too long or has control characters.
    #[error("{field} is invalid: {reason}")]
    InvalidText {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// An enumeration has no value CAP 1.2 allows.
    #[error("{0} has a value CAP 1.2 does not define")]
    InvalidEnum(&'static str),
    /// A coordinate or radius is out of range or not a number.
    #[error("area: {0}")]
    InvalidArea(&'static str),
    /// `expires` is not after `sent`.
    #[error("the alert expires before it is sent")]
    ExpiresBeforeSent,
    /// An Update or Cancel without references, or an Alert with them.
    #[error("references: {0}")]
    References(&'static str),
    /// A time outside CAP's range (0001 to 9999, offsets within 18 hours),
    /// or before 1970.
    #[error("{0} is not a time lifeline can keep (1970 to 9999, offset within 18 hours)")]
    InvalidTime(&'static str),
    /// More infos, areas or resources than an alert may have.
    #[error("the alert has {count} {what}; lifeline keeps at most {max}")]
    TooMany {
        /// "`<info>` blocks", "`<area>` blocks" or "`<resource>`s".
        what: &'static str,
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Larger than lifeline stores.
    #[error(
        "the alert is {0} bytes as lifeline stores it (without embedded media); at most \
         {max} bytes fit in one transaction",
        max = MAX_ALERT_LEN
    )]
    TooLarge(usize),
}

/// A point on Earth, in degrees (WGS 84).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

/// A circle on Earth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Circle {
    /// Centre.
    pub center: Point,
    /// Radius in kilometres (0 is a point).
    pub radius_km: f64,
}

/// A CAP time: the instant and the UTC offset its issuer wrote it with, so
/// that it is written back as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapTime {
    /// The instant (CAP times have whole seconds).
    pub at: Timestamp,
    /// The offset from UTC, in minutes (`-00:00` and `+00:00` are both 0).
    pub offset_minutes: i16,
}

impl CapTime {
    /// `at`, written in UTC.
    pub fn utc(at: Timestamp) -> Self {
        Self {
            at,
            offset_minutes: 0,
        }
    }
}

/// One of CAP's `valueName` / `value` pairs (`<eventCode>`, `<parameter>`,
/// `<geocode>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedValue {
    /// valueName, e.g. "SAME" or "WEAHandling".
    pub name: String,
    /// value.
    pub value: String,
}

/// One `<area>` of an `<info>`: any number of polygons, circles and geocodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Area {
    /// Its name, e.g. "Lower town, east of the river".
    pub description: String,
    /// Closed rings of points (first repeated last).
    pub polygons: Vec<Vec<Point>>,
    /// Circles.
    pub circles: Vec<Circle>,
    /// Codes of regions (FIPS, SAME, national codes...).
    pub geocodes: Vec<NamedValue>,
    /// Altitude in feet, as CAP writes it.
    pub altitude: Option<f64>,
    /// Ceiling in feet (only with an altitude).
    pub ceiling: Option<f64>,
}

impl Area {
    /// Whether the area has a polygon or circle.
    pub fn has_shape(&self) -> bool {
        !(self.polygons.is_empty() && self.circles.is_empty())
    }

    /// Whether `p` lies in one of its shapes.
    pub fn contains(&self, p: Point) -> bool {
        self.polygons.iter().any(|ring| in_ring(ring, p))
            || self
                .circles
                .iter()
                .any(|c| distance_km(c.center, p) <= c.radius_km)
    }
}

/// A `<resource>`: what lifeline keeps of it. The media itself (`<derefUri>`)
/// stays off the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// resourceDesc.
    pub description: String,
    /// mimeType.
    pub mime_type: String,
    /// size in bytes.
    pub size: Option<u64>,
    /// uri.
    pub uri: String,
    /// digest (SHA-1, as CAP 1.2 defines it).
    pub digest: String,
}

/// An `<info>` block: one language or audience's view of the alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    /// RFC 3066 language; empty means CAP's default, en-US.
    pub language: String,
    /// Geo, Met, Safety, ...: one or more, each once.
    pub categories: Vec<AlertCategory>,
    /// The kind of event, e.g. "Flood".
    pub event: String,
    /// Shelter, Evacuate, ...
    pub response_types: Vec<AlertResponseType>,
    /// Immediate, Expected, Future, Past or Unknown.
    pub urgency: AlertUrgency,
    /// Extreme, Severe, Moderate, Minor or Unknown.
    pub severity: AlertSeverity,
    /// Observed, Likely, Possible, Unlikely or Unknown.
    pub certainty: AlertCertainty,
    /// Who it is for.
    pub audience: String,
    /// System-specific event codes.
    pub event_codes: Vec<NamedValue>,
    /// When it takes effect.
    pub effective: Option<CapTime>,
    /// When the event is expected to begin.
    pub onset: Option<CapTime>,
    /// Until when it is in force (none: until replaced, or the network's
    /// alert lifetime).
    pub expires: Option<CapTime>,
    /// The issuer's name for people.
    pub sender_name: String,
    /// One line for people.
    pub headline: String,
    /// What is happening.
    pub description: String,
    /// What to do.
    pub instruction: String,
    /// A link to more.
    pub web: String,
    /// Whom to contact.
    pub contact: String,
    /// System-specific parameters (some gateways put the public text here).
    pub parameters: Vec<NamedValue>,
    /// Resources, without their embedded media.
    pub resources: Vec<Resource>,
    /// Where.
    pub areas: Vec<Area>,
}

impl Info {
    /// One line for people: the headline, or where an issuer put its public
    /// text elsewhere (some alerting gateways send no headline and carry the
    /// wireless-alert text in a parameter such as `CMAMtext`), that
    /// parameter, or else the description.
    pub fn public_text(&self) -> &str {
        if !self.headline.is_empty() {
            return &self.headline;
        }
        let text_parameter = self.parameters.iter().find(|p| {
            let name = p.name.to_ascii_lowercase();
            name.ends_with("text") && !name.contains("long")
        });
        match text_parameter {
            Some(p) => &p.value,
            None => &self.description,
        }
    }
}

/// One alert an Update or Cancel refers to (CAP's "sender,identifier,sent").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The earlier alert's sender (empty in an alert of the first form).
    pub sender: String,
    /// Its identifier.
    pub identifier: String,
    /// When it was sent (none in an alert of the first form).
    pub sent: Option<CapTime>,
}

/// How an alert came onto the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertForm {
    /// The first form (`PublishAlert`): one info, one area of one shape.
    /// Kept for the blocks that carry it, and encoded as it came.
    First,
    /// A CAP alert as its issuer wrote it (`PublishCapAlert`).
    Cap,
}

/// Where a point stands against an alert's areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Inside one of its polygons or circles.
    Inside,
    /// Outside all of them, and the alert has no area known by code only.
    Outside,
    /// Outside its shapes, but some area is given by code (or name) only,
    /// and this node knows no shape for it: it may be inside.
    CodeOnly,
    /// The alert names no area: it is for everyone.
    Everywhere,
}

/// An OASIS CAP 1.2 alert as it is on the chain (scope is always Public).
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Unique id chosen by the sender.
    pub identifier: String,
    /// Who issues it (CAP's sender, e.g. an agency's address).
    pub sender: String,
    /// When it was sent.
    pub sent: CapTime,
    /// Actual, Exercise, System, Test or Draft.
    pub status: AlertStatus,
    /// Alert, Update, Cancel, Ack or Error.
    pub msg_type: AlertMsgType,
    /// The originator's source.
    pub source: String,
    /// Special handling codes.
    pub codes: Vec<String>,
    /// CAP's note.
    pub note: String,
    /// The alerts this one refers to (an Update or Cancel replaces them).
    pub references: Vec<Reference>,
    /// Related incidents, as written.
    pub incidents: String,
    /// Its info blocks (languages, audiences); a Cancel may have none.
    pub infos: Vec<Info>,
    /// How it came onto the chain.
    pub form: AlertForm,
}

fn text(field: &'static str, value: &str, max: usize, required: bool) -> Result<(), AlertError> {
    if value.trim().is_empty() {
        return if required {
            Err(AlertError::Missing(field))
        } else {
            Ok(())
        };
    }
    if value.chars().count() > max {
        return Err(AlertError::InvalidText {
            field,
            reason: "too long",
        });
    }
    // Line breaks and tabs are fine in long texts; other control characters are not.
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(AlertError::InvalidText {
            field,
            reason: "contains control characters",
        });
    }
    Ok(())
}

fn point(p: Option<pb::Point>) -> Result<Point, AlertError> {
    let p = p.ok_or(AlertError::InvalidArea("a point is missing"))?;
    if !(p.lat.is_finite() && p.lon.is_finite()) {
        return Err(AlertError::InvalidArea("a coordinate is not a number"));
    }
    if !(-90.0..=90.0).contains(&p.lat) || !(-180.0..=180.0).contains(&p.lon) {
        return Err(AlertError::InvalidArea("a coordinate is out of range"));
    }
    Ok(Point {
        lat: p.lat,
        lon: p.lon,
    })
}

fn known<E>(
    field: &'static str,
    value: i32,
    convert: impl Fn(i32) -> Option<E>,
) -> Result<E, AlertError> {
    // 0 is each enumeration's UNSPECIFIED: not a CAP value.
    if value == 0 {
        return Err(AlertError::InvalidEnum(field));
    }
    convert(value).ok_or(AlertError::InvalidEnum(field))
}

/// Most `<info>` blocks in one alert (languages times audiences).
pub const MAX_INFOS: usize = 32;
/// Most `<area>` blocks in one alert, over all its infos.
pub const MAX_AREAS: usize = 256;
/// Most `<resource>`s in one alert, over all its infos.
pub const MAX_RESOURCES: usize = 64;

/// Longest URI (`<web>`, a resource's `<uri>`), in characters.
pub const MAX_URI: usize = 2048;
/// Largest alert lifeline stores, encoded: a CAP alert must fit in one
/// transaction with room to spare.
pub const MAX_ALERT_LEN: usize = 36 * 1024;
/// How long an alert without `<expires>` stays in force, unless the
/// network's genesis sets another lifetime.
pub const DEFAULT_ALERT_LIFETIME: Duration = Duration::from_secs(72 * 3600);
/// Most minutes a CAP time's offset is from UTC.
const MAX_OFFSET_MINUTES: i32 = 18 * 60;
/// Latest CAP time: 9999-12-31T23:59:59Z.
const MAX_CAP_SECS: i64 = 253_402_300_799;

fn shape_point(p: &pb::Point) -> Result<Point, AlertError> {
    point(Some(*p))
}

fn cap_time(field: &'static str, t: Option<pb::CapTime>) -> Result<Option<CapTime>, AlertError> {
    let Some(t) = t else { return Ok(None) };
    if !(0..=MAX_CAP_SECS).contains(&t.unix_secs) {
        return Err(AlertError::InvalidTime(field));
    }
    if t.offset_minutes.unsigned_abs() > MAX_OFFSET_MINUTES.unsigned_abs() {
        return Err(AlertError::InvalidTime(field));
    }
    // Written at its offset, it is still a four-digit year.
    if t.unix_secs + i64::from(t.offset_minutes) * 60 > MAX_CAP_SECS {
        return Err(AlertError::InvalidTime(field));
    }
    let secs = u64::try_from(t.unix_secs).map_err(|_| AlertError::InvalidTime(field))?;
    Ok(Some(CapTime {
        at: Timestamp::from_unix_millis(secs * 1000),
        offset_minutes: i16::try_from(t.offset_minutes)
            .map_err(|_| AlertError::InvalidTime(field))?,
    }))
}

pub(crate) fn cap_time_pb(t: &CapTime) -> pb::CapTime {
    pb::CapTime {
        unix_secs: i64::try_from(t.at.as_unix_millis() / 1000).unwrap_or(MAX_CAP_SECS),
        offset_minutes: i32::from(t.offset_minutes),
    }
}

/// A text of a CAP alert: as [`text`], and as an XML reader gives it back,
/// so that what is written out as CAP reads back the same: no leading or
/// trailing white space (readers trim it), line breaks as `\n` (XML turns
/// `\r` into `\n`), and no U+FFFE or U+FFFF (not allowed in XML).
fn cap_text(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), AlertError> {
    text(field, value, max, required)?;
    if value.trim() != value {
        return Err(AlertError::InvalidText {
            field,
            reason: "starts or ends with white space",
        });
    }
    if value.contains(['\r', '\u{fffe}', '\u{ffff}']) {
        return Err(AlertError::InvalidText {
            field,
            reason: "contains a carriage return or a character XML does not allow",
        });
    }
    Ok(())
}

/// CAP's rule for identifiers and senders: no spaces, commas or `<` `&`.
fn cap_token(field: &'static str, value: &str) -> Result<(), AlertError> {
    cap_text(field, value, MAX_SHORT_TEXT, true)?;
    if value
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, ',' | '<' | '&'))
    {
        return Err(AlertError::InvalidText {
            field,
            reason: "CAP does not allow spaces, commas, < or & in it",
        });
    }
    Ok(())
}

fn named_values(
    field: &'static str,
    values: Vec<pb::CapValue>,
) -> Result<Vec<NamedValue>, AlertError> {
    values
        .into_iter()
        .map(|v| {
            cap_text(field, &v.name, MAX_SHORT_TEXT, true)?;
            cap_text(field, &v.value, MAX_LONG_TEXT, true)?;
            Ok(NamedValue {
                name: v.name,
                value: v.value,
            })
        })
        .collect()
}

fn named_values_pb(values: &[NamedValue]) -> Vec<pb::CapValue> {
    values
        .iter()
        .map(|v| pb::CapValue {
            name: v.name.clone(),
            value: v.value.clone(),
        })
        .collect()
}

fn polygon(p: pb::Polygon) -> Result<Vec<Point>, AlertError> {
    if p.points.len() < 4 {
        return Err(AlertError::InvalidArea("a polygon has at least 4 points"));
    }
    let points = p
        .points
        .iter()
        .map(shape_point)
        .collect::<Result<Vec<_>, _>>()?;
    if points.first() != points.last() {
        return Err(AlertError::InvalidArea(
            "a polygon must be closed (first point repeated last)",
        ));
    }
    Ok(points)
}

fn circle(c: pb::Circle) -> Result<Circle, AlertError> {
    let center = point(c.center)?;
    if !(c.radius_km.is_finite() && (0.0..=20_000.0).contains(&c.radius_km)) {
        return Err(AlertError::InvalidArea(
            "a circle's radius is 0 to 20000 km",
        ));
    }
    Ok(Circle {
        center,
        radius_km: c.radius_km,
    })
}

fn circle_pb(c: &Circle) -> pb::Circle {
    pb::Circle {
        center: Some(point_pb(&c.center)),
        radius_km: c.radius_km,
    }
}

fn point_pb(p: &Point) -> pb::Point {
    pb::Point {
        lat: p.lat,
        lon: p.lon,
    }
}

pub(crate) fn check_area(a: pb::CapArea) -> Result<Area, AlertError> {
    cap_text("areaDesc", &a.description, MAX_LONG_TEXT, true)?;
    let polygons = a
        .polygons
        .into_iter()
        .map(polygon)
        .collect::<Result<Vec<_>, _>>()?;
    let circles = a
        .circles
        .into_iter()
        .map(circle)
        .collect::<Result<Vec<_>, _>>()?;
    let geocodes = named_values("geocode", a.geocodes)?;
    if a.altitude.is_some_and(|x| !x.is_finite()) || a.ceiling.is_some_and(|x| !x.is_finite()) {
        return Err(AlertError::InvalidArea("altitude and ceiling are numbers"));
    }
    if a.ceiling.is_some() && a.altitude.is_none() {
        return Err(AlertError::InvalidArea(
            "CAP gives a ceiling only with an altitude",
        ));
    }
    Ok(Area {
        description: a.description,
        polygons,
        circles,
        geocodes,
        altitude: a.altitude,
        ceiling: a.ceiling,
    })
}

pub(crate) fn check_info(i: pb::CapInfo) -> Result<Info, AlertError> {
    cap_text("language", &i.language, MAX_SHORT_TEXT, false)?;
    cap_text("event", &i.event, MAX_SHORT_TEXT, true)?;
    cap_text("audience", &i.audience, MAX_LONG_TEXT, false)?;
    cap_text("senderName", &i.sender_name, MAX_SHORT_TEXT, false)?;
    cap_text("headline", &i.headline, MAX_SHORT_TEXT, false)?;
    cap_text("description", &i.description, MAX_LONG_TEXT, false)?;
    cap_text("instruction", &i.instruction, MAX_LONG_TEXT, false)?;
    cap_text("web", &i.web, MAX_URI, false)?;
    cap_text("contact", &i.contact, MAX_LONG_TEXT, false)?;
    let categories = all_known("category", &i.categories, |v| {
        AlertCategory::try_from(v).ok()
    })?;
    if categories.is_empty() {
        return Err(AlertError::Missing("category"));
    }
    let response_types = all_known("responseType", &i.response_types, |v| {
        AlertResponseType::try_from(v).ok()
    })?;
    let urgency = known("urgency", i.urgency, |v| AlertUrgency::try_from(v).ok())?;
    let severity = known("severity", i.severity, |v| AlertSeverity::try_from(v).ok())?;
    let certainty = known("certainty", i.certainty, |v| {
        AlertCertainty::try_from(v).ok()
    })?;
    let resources = i
        .resources
        .into_iter()
        .map(|r| {
            cap_text("resourceDesc", &r.description, MAX_LONG_TEXT, true)?;
            cap_text("mimeType", &r.mime_type, MAX_SHORT_TEXT, true)?;
            cap_text("uri", &r.uri, MAX_URI, false)?;
            cap_text("digest", &r.digest, MAX_SHORT_TEXT, false)?;
            Ok(Resource {
                description: r.description,
                mime_type: r.mime_type,
                size: r.size,
                uri: r.uri,
                digest: r.digest,
            })
        })
        .collect::<Result<Vec<_>, AlertError>>()?;
    Ok(Info {
        language: i.language,
        categories,
        event: i.event,
        response_types,
        urgency,
        severity,
        certainty,
        audience: i.audience,
        event_codes: named_values("eventCode", i.event_codes)?,
        effective: cap_time("effective", i.effective)?,
        onset: cap_time("onset", i.onset)?,
        expires: cap_time("expires", i.expires)?,
        sender_name: i.sender_name,
        headline: i.headline,
        description: i.description,
        instruction: i.instruction,
        web: i.web,
        contact: i.contact,
        parameters: named_values("parameter", i.parameters)?,
        resources,
        areas: i
            .areas
            .into_iter()
            .map(check_area)
            .collect::<Result<Vec<_>, _>>()?,
    })
}

fn check_counts(infos: usize, areas: usize, resources: usize) -> Result<(), AlertError> {
    for (what, count, max) in [
        ("<info> blocks", infos, MAX_INFOS),
        ("<area> blocks", areas, MAX_AREAS),
        ("<resource>s", resources, MAX_RESOURCES),
    ] {
        if count > max {
            return Err(AlertError::TooMany { what, count, max });
        }
    }
    Ok(())
}

/// The protobuf fields of a message, as (number, payload of a
/// length-delimited field), without decoding them. Stops at the first
/// malformed field (the decoder then says what is wrong).
struct WireFields<'a>(&'a [u8]);

impl<'a> WireFields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    fn skip(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken)
    }
}

impl<'a> Iterator for WireFields<'a> {
    type Item = (u64, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let key = self.varint()?;
        let payload = match key & 7 {
            0 => {
                self.varint()?;
                None
            }
            1 => {
                self.skip(8)?;
                None
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Some(self.skip(len)?)
            }
            5 => {
                self.skip(4)?;
                None
            }
            _ => {
                self.0 = &[];
                return None;
            }
        };
        Some((key >> 3, payload))
    }
}

/// The message payloads of field `number` in `message`.
fn submessages(message: &[u8], number: u64) -> impl Iterator<Item = &[u8]> {
    WireFields(message).filter_map(move |(n, payload)| payload.filter(|_| n == number))
}

/// Counts the infos, areas and resources of a `PublishCapAlert` in an
/// encoded `Transaction` body before it is decoded: an empty `<info>` is 2
/// bytes on the wire but about 450 in memory, so a 40 KiB transaction of
/// them would make the decoder allocate some 20 MB before its signature is
/// checked. Refuses what [`Alert::from_cap_pb`] would refuse for its counts.
pub(crate) fn precheck_transaction(body: &[u8]) -> Result<(), AlertError> {
    // Transaction.publish_cap_alert = 17, PublishCapAlert.alert = 1,
    // CapAlert.infos = 11, CapInfo.resources = 20, CapInfo.areas = 21.
    let (mut infos, mut areas, mut resources) = (0, 0, 0);
    for publish in submessages(body, 17) {
        for alert in submessages(publish, 1) {
            for info in submessages(alert, 11) {
                infos += 1;
                for (n, payload) in WireFields(info) {
                    match (n, payload) {
                        (20, Some(_)) => resources += 1,
                        (21, Some(_)) => areas += 1,
                        _ => {}
                    }
                }
                check_counts(infos, areas, resources)?;
            }
        }
    }
    check_counts(infos, areas, resources)
}

/// Values of a CAP enumeration that may repeat (kept as written).
fn all_known<E>(
    field: &'static str,
    values: &[i32],
    convert: impl Fn(i32) -> Option<E>,
) -> Result<Vec<E>, AlertError> {
    values.iter().map(|&v| known(field, v, &convert)).collect()
}

impl Alert {
    /// Decodes and validates an alert of the first form (`PublishAlert`).
    /// Its rules are the ones the blocks carrying it were checked by.
    pub fn from_pb(a: pb::Alert) -> Result<Self, AlertError> {
        text("identifier", &a.identifier, MAX_SHORT_TEXT, true)?;
        text("sender", &a.sender, MAX_SHORT_TEXT, true)?;
        text("event", &a.event, MAX_SHORT_TEXT, true)?;
        text("headline", &a.headline, MAX_SHORT_TEXT, false)?;
        text("description", &a.description, MAX_LONG_TEXT, false)?;
        text("instruction", &a.instruction, MAX_LONG_TEXT, false)?;
        let status = known("status", a.status, |v| AlertStatus::try_from(v).ok())?;
        let msg_type = known("msgType", a.msg_type, |v| AlertMsgType::try_from(v).ok())?;
        let urgency = known("urgency", a.urgency, |v| AlertUrgency::try_from(v).ok())?;
        let severity = known("severity", a.severity, |v| AlertSeverity::try_from(v).ok())?;
        let certainty = known("certainty", a.certainty, |v| {
            AlertCertainty::try_from(v).ok()
        })?;
        if a.categories.is_empty() {
            return Err(AlertError::Missing("category"));
        }
        let mut categories = Vec::with_capacity(a.categories.len());
        for &c in &a.categories {
            let c = known("category", c, |v| AlertCategory::try_from(v).ok())?;
            if categories.contains(&c) {
                return Err(AlertError::InvalidEnum("category (given twice)"));
            }
            categories.push(c);
        }
        if a.sent_ms == 0 {
            return Err(AlertError::Missing("sent"));
        }
        if a.expires_ms <= a.sent_ms {
            return Err(AlertError::ExpiresBeforeSent);
        }
        if a.references.len() > MAX_REFERENCES {
            return Err(AlertError::References("too many"));
        }
        for r in &a.references {
            text("references", r, MAX_SHORT_TEXT, true)?;
        }
        match msg_type {
            AlertMsgType::Update | AlertMsgType::Cancel if a.references.is_empty() => {
                return Err(AlertError::References(
                    "an Update or Cancel names the alerts it replaces",
                ));
            }
            AlertMsgType::Alert if !a.references.is_empty() => {
                return Err(AlertError::References("a new Alert refers to nothing"));
            }
            _ => {}
        }
        let area = a.area.ok_or(AlertError::Missing("area"))?;
        text("area description", &area.description, MAX_SHORT_TEXT, true)?;
        let (polygons, circles) = match area.shape.ok_or(AlertError::Missing("area shape"))? {
            pb::alert_area::Shape::Polygon(p) => {
                if p.points.len() < 4 || p.points.len() > MAX_POLYGON_POINTS {
                    return Err(AlertError::InvalidArea("a polygon has 4 to 256 points"));
                }
                let points = p
                    .points
                    .into_iter()
                    .map(|q| point(Some(q)))
                    .collect::<Result<Vec<_>, _>>()?;
                if points.first() != points.last() {
                    return Err(AlertError::InvalidArea(
                        "a polygon must be closed (first point repeated last)",
                    ));
                }
                (vec![points], vec![])
            }
            pb::alert_area::Shape::Circle(c) => {
                let center = point(c.center)?;
                if !(c.radius_km.is_finite() && c.radius_km > 0.0 && c.radius_km <= 20_000.0) {
                    return Err(AlertError::InvalidArea(
                        "a circle's radius is 0 to 20000 km",
                    ));
                }
                (
                    vec![],
                    vec![Circle {
                        center,
                        radius_km: c.radius_km,
                    }],
                )
            }
        };
        let utc_ms = |ms| CapTime::utc(Timestamp::from_unix_millis(ms));
        Ok(Self {
            identifier: a.identifier,
            sender: a.sender,
            sent: utc_ms(a.sent_ms),
            status,
            msg_type,
            source: String::new(),
            codes: vec![],
            note: String::new(),
            references: a
                .references
                .into_iter()
                .map(|identifier| Reference {
                    sender: String::new(),
                    identifier,
                    sent: None,
                })
                .collect(),
            incidents: String::new(),
            infos: vec![Info {
                language: String::new(),
                categories,
                event: a.event,
                response_types: vec![],
                urgency,
                severity,
                certainty,
                audience: String::new(),
                event_codes: vec![],
                effective: None,
                onset: None,
                expires: Some(utc_ms(a.expires_ms)),
                sender_name: String::new(),
                headline: a.headline,
                description: a.description,
                instruction: a.instruction,
                web: String::new(),
                contact: String::new(),
                parameters: vec![],
                resources: vec![],
                areas: vec![Area {
                    description: area.description,
                    polygons,
                    circles,
                    geocodes: vec![],
                    altitude: None,
                    ceiling: None,
                }],
            }],
            form: AlertForm::First,
        })
    }

    /// The first form's wire encoding, for an alert that came in it (none
    /// for a CAP alert: it does not fit).
    pub fn to_first_form(&self) -> Option<pb::Alert> {
        if self.form != AlertForm::First {
            return None;
        }
        let [info] = self.infos.as_slice() else {
            return None;
        };
        let [area] = info.areas.as_slice() else {
            return None;
        };
        let shape = match (area.polygons.as_slice(), area.circles.as_slice()) {
            ([points], []) => pb::alert_area::Shape::Polygon(pb::Polygon {
                points: points.iter().map(point_pb).collect(),
            }),
            ([], [c]) => pb::alert_area::Shape::Circle(circle_pb(c)),
            _ => return None,
        };
        Some(pb::Alert {
            identifier: self.identifier.clone(),
            sender: self.sender.clone(),
            sent_ms: self.sent.at.as_unix_millis(),
            status: self.status.into(),
            msg_type: self.msg_type.into(),
            references: self
                .references
                .iter()
                .map(|r| r.identifier.clone())
                .collect(),
            categories: info.categories.iter().map(|&c| c.into()).collect(),
            event: info.event.clone(),
            urgency: info.urgency.into(),
            severity: info.severity.into(),
            certainty: info.certainty.into(),
            headline: info.headline.clone(),
            description: info.description.clone(),
            instruction: info.instruction.clone(),
            area: Some(pb::AlertArea {
                description: area.description.clone(),
                shape: Some(shape),
            }),
            expires_ms: info.expires?.at.as_unix_millis(),
        })
    }

    /// Decodes and validates a CAP alert (`PublishCapAlert`).
    pub fn from_cap_pb(a: pb::CapAlert) -> Result<Self, AlertError> {
        let len = prost::Message::encoded_len(&a);
        if len > MAX_ALERT_LEN {
            return Err(AlertError::TooLarge(len));
        }
        let areas = a.infos.iter().map(|i| i.areas.len()).sum();
        let resources = a.infos.iter().map(|i| i.resources.len()).sum();
        check_counts(a.infos.len(), areas, resources)?;
        cap_token("identifier", &a.identifier)?;
        cap_token("sender", &a.sender)?;
        cap_text("source", &a.source, MAX_SHORT_TEXT, false)?;
        cap_text("note", &a.note, MAX_LONG_TEXT, false)?;
        cap_text("incidents", &a.incidents, MAX_LONG_TEXT, false)?;
        for c in &a.codes {
            cap_text("code", c, MAX_SHORT_TEXT, true)?;
        }
        let sent = cap_time("sent", a.sent)?.ok_or(AlertError::Missing("sent"))?;
        let status = known("status", a.status, |v| AlertStatus::try_from(v).ok())?;
        let msg_type = known("msgType", a.msg_type, |v| AlertMsgType::try_from(v).ok())?;
        if a.references.len() > MAX_REFERENCES {
            return Err(AlertError::References("too many"));
        }
        let references = a
            .references
            .into_iter()
            .map(|r| {
                cap_token("references", &r.sender)?;
                cap_token("references", &r.identifier)?;
                Ok(Reference {
                    sender: r.sender,
                    identifier: r.identifier,
                    sent: Some(
                        cap_time("references", r.sent)?
                            .ok_or(AlertError::Missing("the sent time of a reference"))?,
                    ),
                })
            })
            .collect::<Result<Vec<_>, AlertError>>()?;
        if matches!(msg_type, AlertMsgType::Update | AlertMsgType::Cancel) && references.is_empty()
        {
            return Err(AlertError::References(
                "an Update or Cancel names the alerts it replaces",
            ));
        }
        let infos = a
            .infos
            .into_iter()
            .map(check_info)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            identifier: a.identifier,
            sender: a.sender,
            sent,
            status,
            msg_type,
            source: a.source,
            codes: a.codes,
            note: a.note,
            references,
            incidents: a.incidents,
            infos,
            form: AlertForm::Cap,
        })
    }

    /// The CAP wire form (any alert, of either form, has one).
    pub fn to_cap_pb(&self) -> pb::CapAlert {
        let time = |t: &Option<CapTime>| t.as_ref().map(cap_time_pb);
        pb::CapAlert {
            identifier: self.identifier.clone(),
            sender: self.sender.clone(),
            sent: Some(cap_time_pb(&self.sent)),
            status: self.status.into(),
            msg_type: self.msg_type.into(),
            source: self.source.clone(),
            codes: self.codes.clone(),
            note: self.note.clone(),
            references: self
                .references
                .iter()
                .map(|r| pb::CapReference {
                    sender: r.sender.clone(),
                    identifier: r.identifier.clone(),
                    sent: time(&r.sent),
                })
                .collect(),
            incidents: self.incidents.clone(),
            infos: self
                .infos
                .iter()
                .map(|i| pb::CapInfo {
                    language: i.language.clone(),
                    categories: i.categories.iter().map(|&c| c.into()).collect(),
                    event: i.event.clone(),
                    response_types: i.response_types.iter().map(|&r| r.into()).collect(),
                    urgency: i.urgency.into(),
                    severity: i.severity.into(),
                    certainty: i.certainty.into(),
                    audience: i.audience.clone(),
                    event_codes: named_values_pb(&i.event_codes),
                    effective: time(&i.effective),
                    onset: time(&i.onset),
                    expires: time(&i.expires),
                    sender_name: i.sender_name.clone(),
                    headline: i.headline.clone(),
                    description: i.description.clone(),
                    instruction: i.instruction.clone(),
                    web: i.web.clone(),
                    contact: i.contact.clone(),
                    parameters: named_values_pb(&i.parameters),
                    resources: i
                        .resources
                        .iter()
                        .map(|r| pb::CapResource {
                            description: r.description.clone(),
                            mime_type: r.mime_type.clone(),
                            size: r.size,
                            uri: r.uri.clone(),
                            digest: r.digest.clone(),
                        })
                        .collect(),
                    areas: i
                        .areas
                        .iter()
                        .map(|a| pb::CapArea {
                            description: a.description.clone(),
                            polygons: a
                                .polygons
                                .iter()
                                .map(|p| pb::Polygon {
                                    points: p.iter().map(point_pb).collect(),
                                })
                                .collect(),
                            circles: a.circles.iter().map(circle_pb).collect(),
                            geocodes: named_values_pb(&a.geocodes),
                            altitude: a.altitude,
                            ceiling: a.ceiling,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The bytes the chain's state commits to: the form it came in.
    pub fn state_bytes(&self) -> Vec<u8> {
        match self.to_first_form() {
            Some(first) => prost::Message::encode_to_vec(&first),
            None => prost::Message::encode_to_vec(&self.to_cap_pb()),
        }
    }

    /// The info block shown first: the first one, as its issuer ordered them.
    pub fn first_info(&self) -> Option<&Info> {
        self.infos.first()
    }

    /// The info block in `language` (an RFC 3066 tag, or its primary part
    /// such as `fr` for `fr-CA`; case aside), else the first. An empty
    /// `language` asks for the first; an info without `<language>` is CAP's
    /// default, en-US.
    pub fn info_in(&self, language: &str) -> Option<&Info> {
        let wanted = language.trim().to_ascii_lowercase();
        if wanted.is_empty() {
            return self.first_info();
        }
        let tag = |i: &Info| {
            if i.language.is_empty() {
                "en-us".to_owned()
            } else {
                i.language.to_ascii_lowercase()
            }
        };
        let primary = |t: &str| t.split('-').next().unwrap_or("").to_owned();
        self.infos
            .iter()
            .find(|i| tag(i) == wanted)
            .or_else(|| {
                self.infos
                    .iter()
                    .find(|i| primary(&tag(i)) == primary(&wanted))
            })
            .or_else(|| self.first_info())
    }

    /// The most severe of its info blocks' severities (Unknown with none).
    pub fn severity(&self) -> AlertSeverity {
        self.infos
            .iter()
            .map(|i| i.severity)
            .min_by_key(|s| *s as i32)
            .unwrap_or(AlertSeverity::Unknown)
    }

    /// When it stops being in force: the latest `<expires>` of its info
    /// blocks, or `lifetime` after it was sent if one has none.
    pub fn ends(&self, lifetime: Duration) -> Timestamp {
        let expiries: Option<Vec<Timestamp>> =
            self.infos.iter().map(|i| i.expires.map(|e| e.at)).collect();
        match expiries {
            Some(e) if !e.is_empty() => e.into_iter().max().unwrap_or(self.sent.at),
            _ => self.sent.at.saturating_add(lifetime),
        }
    }

    /// Whether the alert is in force at `now` (see [`Alert::ends`]).
    pub fn in_force(&self, now: Timestamp, lifetime: Duration) -> bool {
        self.sent.at <= now && now < self.ends(lifetime)
    }

    /// Where `p` stands against its areas, by their polygons and circles.
    pub fn coverage(&self, p: Point) -> Coverage {
        self.coverage_with(p, &|_| None)
    }

    /// Where `p` stands against its areas, with `geocode` telling whether
    /// the shape of a region code contains `p` (`None`: the code's shape is
    /// not known). An area with a polygon or circle is judged by them; one
    /// given by codes only is inside if a known code's shape holds `p`, and
    /// unknown if any of its codes has no known shape.
    pub fn coverage_with(
        &self,
        p: Point,
        geocode: &dyn Fn(&NamedValue) -> Option<bool>,
    ) -> Coverage {
        let mut unknown = false;
        let mut any = false;
        for area in self.infos.iter().flat_map(|i| &i.areas) {
            any = true;
            if area.has_shape() {
                if area.contains(p) {
                    return Coverage::Inside;
                }
                continue;
            }
            let known: Vec<Option<bool>> = area.geocodes.iter().map(geocode).collect();
            if known.contains(&Some(true)) {
                return Coverage::Inside;
            }
            if known.is_empty() || known.contains(&None) {
                unknown = true;
            }
        }
        if !any {
            Coverage::Everywhere
        } else if unknown {
            Coverage::CodeOnly
        } else {
            Coverage::Outside
        }
    }

    /// Whether `p` may be in its area: inside a shape, in an area known by
    /// code only, or in an alert for everyone.
    pub fn covers(&self, p: Point) -> bool {
        self.coverage(p) != Coverage::Outside
    }
}

/// A realistic sample alert: a flood over a small square of a lower town,
/// sent at `sent_ms` and in force for six hours. For examples, the devnet and
/// tests.
pub fn sample_flood(identifier: &str, sent_ms: u64) -> pb::Alert {
    let p = |lat, lon| pb::Point { lat, lon };
    pb::Alert {
        identifier: identifier.into(),
        sender: "civil-protection@example.org".into(),
        sent_ms,
        status: AlertStatus::Actual.into(),
        msg_type: AlertMsgType::Alert.into(),
        references: vec![],
        categories: vec![AlertCategory::Met.into()],
        event: "Flood".into(),
        urgency: AlertUrgency::Immediate.into(),
        severity: AlertSeverity::Severe.into(),
        certainty: AlertCertainty::Observed.into(),
        headline: "River over its banks in the lower town".into(),
        description: "The river has flooded streets east of the bridge.".into(),
        instruction: "Move to higher floors or to the school on the hill.".into(),
        area: Some(pb::AlertArea {
            description: "Lower town".into(),
            shape: Some(pb::alert_area::Shape::Polygon(pb::Polygon {
                points: vec![
                    p(51.0, 12.0),
                    p(51.0, 12.1),
                    p(51.1, 12.1),
                    p(51.1, 12.0),
                    p(51.0, 12.0),
                ],
            })),
        }),
        expires_ms: sent_ms.saturating_add(6 * 3_600_000),
    }
}

/// Great-circle distance (haversine), in kilometres.
pub fn distance_km(a: Point, b: Point) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Even-odd point-in-polygon test on latitude/longitude (fine for the small
/// areas alerts cover; rings crossing the antimeridian are not special-cased).
pub fn in_ring(ring: &[Point], p: Point) -> bool {
    let mut inside = false;
    for edge in ring.windows(2) {
        let (a, b) = (edge[0], edge[1]);
        if (a.lat > p.lat) != (b.lat > p.lat) {
            let lon_at = a.lon + (p.lat - a.lat) / (b.lat - a.lat) * (b.lon - a.lon);
            if p.lon < lon_at {
                inside = !inside;
            }
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::sample_flood as flood;

    #[test]
    fn a_valid_alert_round_trips_and_covers_its_area() {
        let alert = Alert::from_pb(flood("a1", 1_000)).unwrap();
        assert_eq!(alert.to_first_form(), Some(flood("a1", 1_000)));
        // Its CAP form reads back to the same content, as a CAP alert.
        let cap = Alert::from_cap_pb(alert.to_cap_pb()).unwrap();
        assert_eq!(cap.form, AlertForm::Cap);
        assert_eq!(cap.to_first_form(), None);
        assert_eq!(
            Alert {
                form: AlertForm::First,
                ..cap
            },
            alert
        );
        assert!(alert.covers(Point {
            lat: 51.05,
            lon: 12.05
        }));
        assert!(!alert.covers(Point {
            lat: 51.2,
            lon: 12.05
        }));
        let life = DEFAULT_ALERT_LIFETIME;
        assert!(alert.in_force(Timestamp::from_unix_millis(1_000), life));
        assert!(!alert.in_force(Timestamp::from_unix_millis(1_000 + 6 * 3_600_000), life));
    }

    #[test]
    fn counts_are_read_off_the_wire_as_the_decoder_would_count_them() {
        let body = |infos: Vec<pb::CapInfo>| {
            prost::Message::encode_to_vec(&pb::Transaction {
                sender: vec![1; 32],
                nonce: 3,
                action: Some(pb::transaction::Action::PublishCapAlert(
                    pb::PublishCapAlert {
                        alert: Some(pb::CapAlert {
                            identifier: "x".into(),
                            infos,
                            ..Default::default()
                        }),
                    },
                )),
            })
        };
        let info = |areas, resources| pb::CapInfo {
            event: "Flood".into(),
            areas: vec![pb::CapArea::default(); areas],
            resources: vec![pb::CapResource::default(); resources],
            ..Default::default()
        };
        assert_eq!(precheck_transaction(&body(vec![info(8, 2); 32])), Ok(()));
        let too_many = |what, count, max| Err(AlertError::TooMany { what, count, max });
        assert_eq!(
            precheck_transaction(&body(vec![info(0, 0); 33])),
            too_many("<info> blocks", 33, MAX_INFOS)
        );
        assert_eq!(
            precheck_transaction(&body(vec![info(200, 0), info(57, 0)])),
            too_many("<area> blocks", 257, MAX_AREAS)
        );
        assert_eq!(
            precheck_transaction(&body(vec![info(0, 65)])),
            too_many("<resource>s", 65, MAX_RESOURCES)
        );
        // Other transactions, and bytes that are not protobuf, pass through
        // to the decoder, which says what is wrong.
        assert_eq!(precheck_transaction(&[0xff, 0xff, 0xff]), Ok(()));
        let first = prost::Message::encode_to_vec(&pb::Transaction {
            sender: vec![1; 32],
            nonce: 0,
            action: Some(pb::transaction::Action::PublishAlert(pb::PublishAlert {
                alert: Some(flood("a", 1_000)),
            })),
        });
        assert_eq!(precheck_transaction(&first), Ok(()));
    }

    #[test]
    fn a_cap_alert_holds_only_what_cap_xml_can_carry_back() {
        let mut cap = Alert::from_pb(flood("w", 1_000)).unwrap().to_cap_pb();
        assert!(Alert::from_cap_pb(cap.clone()).is_ok());
        // XML readers trim texts and turn \r into \n: such a text would
        // not read back as it was.
        cap.infos[0].headline = " River over its banks".into();
        assert_eq!(
            Alert::from_cap_pb(cap.clone()),
            Err(AlertError::InvalidText {
                field: "headline",
                reason: "starts or ends with white space"
            })
        );
        cap.infos[0].headline = "River\r\nover its banks".into();
        assert!(Alert::from_cap_pb(cap.clone()).is_err());
        cap.infos[0].headline = "River over its banks".into();
        // The last second of 9999 at +01:00 is a five-digit year there.
        cap.infos[0].expires = Some(pb::CapTime {
            unix_secs: MAX_CAP_SECS,
            offset_minutes: 60,
        });
        assert_eq!(
            Alert::from_cap_pb(cap.clone()),
            Err(AlertError::InvalidTime("expires"))
        );
        cap.infos[0].expires = Some(pb::CapTime {
            unix_secs: 0,
            offset_minutes: i32::MIN,
        });
        assert_eq!(
            Alert::from_cap_pb(cap),
            Err(AlertError::InvalidTime("expires"))
        );
    }

    #[test]
    fn circles_use_great_circle_distance() {
        let mut a = flood("c", 1_000);
        a.area = Some(pb::AlertArea {
            description: "Around the dam".into(),
            shape: Some(pb::alert_area::Shape::Circle(pb::Circle {
                center: Some(pb::Point {
                    lat: 50.0,
                    lon: 10.0,
                }),
                radius_km: 10.0,
            })),
        });
        let alert = Alert::from_pb(a).unwrap();
        // 0.08 degrees of latitude is about 8.9 km; 0.1 is about 11.1 km.
        assert!(alert.covers(Point {
            lat: 50.08,
            lon: 10.0
        }));
        assert!(!alert.covers(Point {
            lat: 50.1,
            lon: 10.0
        }));
    }

    #[test]
    fn invalid_alerts_are_refused_with_the_reason() {
        let check = |f: &dyn Fn(&mut pb::Alert), expected: AlertError| {
            let mut a = flood("x", 1_000);
            f(&mut a);
            assert_eq!(Alert::from_pb(a), Err(expected));
        };
        check(&|a| a.identifier.clear(), AlertError::Missing("identifier"));
        check(&|a| a.status = 0, AlertError::InvalidEnum("status"));
        check(&|a| a.severity = 99, AlertError::InvalidEnum("severity"));
        check(&|a| a.expires_ms = a.sent_ms, AlertError::ExpiresBeforeSent);
        check(
            &|a| a.headline = "a\u{7}b".into(),
            AlertError::InvalidText {
                field: "headline",
                reason: "contains control characters",
            },
        );
        check(
            &|a| a.msg_type = AlertMsgType::Cancel.into(),
            AlertError::References("an Update or Cancel names the alerts it replaces"),
        );
        check(&|a| a.area = None, AlertError::Missing("area"));
        check(
            &|a| {
                if let Some(pb::alert_area::Shape::Polygon(p)) =
                    a.area.as_mut().and_then(|ar| ar.shape.as_mut())
                {
                    p.points[1].lat = f64::NAN;
                }
            },
            AlertError::InvalidArea("a coordinate is not a number"),
        );
        check(
            &|a| {
                if let Some(pb::alert_area::Shape::Polygon(p)) =
                    a.area.as_mut().and_then(|ar| ar.shape.as_mut())
                {
                    p.points.pop();
                }
            },
            AlertError::InvalidArea("a polygon must be closed (first point repeated last)"),
        );
    }
}
