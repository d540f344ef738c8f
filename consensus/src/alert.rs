//! Official alerts: the fields of an OASIS Common Alerting Protocol (CAP) 1.2
//! alert that lifeline carries, validated before they go on the chain.

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
    AlertCategory, AlertCertainty, AlertMsgType, AlertSeverity, AlertStatus, AlertUrgency,
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
}

/// A point on Earth, in degrees (WGS 84).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

/// The area an alert covers.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// A closed ring of points (first repeated last).
    Polygon(Vec<Point>),
    /// A circle.
    Circle {
        /// Centre.
        center: Point,
        /// Radius in kilometres.
        radius_km: f64,
    },
}

/// An alert's area.
#[derive(Clone, Debug, PartialEq)]
pub struct Area {
    /// Its name, e.g. "Lower town, east of the river".
    pub description: String,
    /// Its shape.
    pub shape: Shape,
}

/// A CAP 1.2 alert (one info block, one area).
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Unique id chosen by the sender.
    pub identifier: String,
    /// Who issues it (CAP's sender, e.g. an agency's address).
    pub sender: String,
    /// When it was sent.
    pub sent: Timestamp,
    /// Actual, Exercise, System, Test or Draft.
    pub status: AlertStatus,
    /// Alert, Update, Cancel, Ack or Error.
    pub msg_type: AlertMsgType,
    /// The identifiers an Update or Cancel refers to.
    pub references: Vec<String>,
    /// Geo, Met, Safety, Security, Rescue, Fire, Health, Env, Transport,
    /// Infra, CBRNE or Other: one or more, each once.
    pub categories: Vec<AlertCategory>,
    /// The kind of event, e.g. "Flood".
    pub event: String,
    /// Immediate, Expected, Future, Past or Unknown.
    pub urgency: AlertUrgency,
    /// Extreme, Severe, Moderate, Minor or Unknown.
    pub severity: AlertSeverity,
    /// Observed, Likely, Possible, Unlikely or Unknown.
    pub certainty: AlertCertainty,
    /// One line for people.
    pub headline: String,
    /// What is happening.
    pub description: String,
    /// What to do.
    pub instruction: String,
    /// Where.
    pub area: Area,
    /// Until when it is in force.
    pub expires: Timestamp,
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

impl Alert {
    /// Decodes and validates an alert.
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
        let shape = match area.shape.ok_or(AlertError::Missing("area shape"))? {
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
                Shape::Polygon(points)
            }
            pb::alert_area::Shape::Circle(c) => {
                let center = point(c.center)?;
                if !(c.radius_km.is_finite() && c.radius_km > 0.0 && c.radius_km <= 20_000.0) {
                    return Err(AlertError::InvalidArea(
                        "a circle's radius is 0 to 20000 km",
                    ));
                }
                Shape::Circle {
                    center,
                    radius_km: c.radius_km,
                }
            }
        };
        Ok(Self {
            identifier: a.identifier,
            sender: a.sender,
            sent: Timestamp::from_unix_millis(a.sent_ms),
            status,
            msg_type,
            references: a.references,
            categories,
            event: a.event,
            urgency,
            severity,
            certainty,
            headline: a.headline,
            description: a.description,
            instruction: a.instruction,
            area: Area {
                description: area.description,
                shape,
            },
            expires: Timestamp::from_unix_millis(a.expires_ms),
        })
    }

    /// The wire form.
    pub fn to_pb(&self) -> pb::Alert {
        let pt = |p: &Point| pb::Point {
            lat: p.lat,
            lon: p.lon,
        };
        pb::Alert {
            identifier: self.identifier.clone(),
            sender: self.sender.clone(),
            sent_ms: self.sent.as_unix_millis(),
            status: self.status.into(),
            msg_type: self.msg_type.into(),
            references: self.references.clone(),
            categories: self.categories.iter().map(|&c| c.into()).collect(),
            event: self.event.clone(),
            urgency: self.urgency.into(),
            severity: self.severity.into(),
            certainty: self.certainty.into(),
            headline: self.headline.clone(),
            description: self.description.clone(),
            instruction: self.instruction.clone(),
            area: Some(pb::AlertArea {
                description: self.area.description.clone(),
                shape: Some(match &self.area.shape {
                    Shape::Polygon(points) => pb::alert_area::Shape::Polygon(pb::Polygon {
                        points: points.iter().map(pt).collect(),
                    }),
                    Shape::Circle { center, radius_km } => {
                        pb::alert_area::Shape::Circle(pb::Circle {
                            center: Some(pt(center)),
                            radius_km: *radius_km,
                        })
                    }
                }),
            }),
            expires_ms: self.expires.as_unix_millis(),
        }
    }

    /// Whether the alert is in force at `now`.
    pub fn in_force(&self, now: Timestamp) -> bool {
        self.sent <= now && now < self.expires
    }

    /// Whether `p` lies in the alert's area.
    pub fn covers(&self, p: Point) -> bool {
        match &self.area.shape {
            Shape::Circle { center, radius_km } => distance_km(*center, p) <= *radius_km,
            Shape::Polygon(ring) => in_ring(ring, p),
        }
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
fn in_ring(ring: &[Point], p: Point) -> bool {
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
        assert_eq!(Alert::from_pb(alert.to_pb()).unwrap(), alert);
        assert!(alert.covers(Point {
            lat: 51.05,
            lon: 12.05
        }));
        assert!(!alert.covers(Point {
            lat: 51.2,
            lon: 12.05
        }));
        assert!(alert.in_force(Timestamp::from_unix_millis(1_000)));
        assert!(!alert.in_force(Timestamp::from_unix_millis(1_000 + 6 * 3_600_000)));
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
