//! CAP 1.2 XML in and out: an agency's real-looking alert is read with every
//! field in place, written back and read again unchanged, and each kind of
//! bad document is refused with an error that names the element and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lifeline_consensus::alert::{
    Alert, AlertCategory, AlertMsgType, AlertSeverity, AlertStatus, Point, Shape, sample_flood,
};
use lifeline_consensus::cap::{CapError, MAX_CAP_LEN, format_time, from_cap_xml, to_cap_xml};
use lifeline_crypto::Timestamp;
use proptest::prelude::*;

const FLOOD: &str = include_str!("../../docs/examples/flood-alert.xml");

fn no_lookup(_: &str) -> Option<(String, Timestamp)> {
    None
}

#[test]
fn the_example_alert_reads_with_every_field() {
    let import = from_cap_xml(FLOOD).unwrap();
    let a = &import.alert;
    assert_eq!(a.identifier, "DE-SN-LZ-2026-1121-001");
    assert_eq!(a.sender, "leitstelle@civil-protection.example.org");
    // 14:30 at +01:00 is 13:30 UTC.
    assert_eq!(format_time(a.sent), "2026-11-21T13:30:00-00:00");
    assert_eq!(a.status, AlertStatus::Exercise);
    assert_eq!(a.msg_type, AlertMsgType::Alert);
    assert_eq!(a.categories, [AlertCategory::Met, AlertCategory::Safety]);
    assert_eq!(a.severity, AlertSeverity::Severe);
    assert_eq!(a.event, "Flood");
    assert!(a.instruction.starts_with("Leave ground floors now."));
    match &a.area.shape {
        Shape::Polygon(points) => {
            assert_eq!(points.len(), 5);
            assert_eq!(
                points[1],
                Point {
                    lat: 51.33,
                    lon: 12.345
                }
            );
        }
        other => panic!("expected a polygon, read {other:?}"),
    }
    assert!(a.covers(Point {
        lat: 51.335,
        lon: 12.33
    }));
    // What lifeline does not carry is named, not dropped in silence.
    for element in [
        "<note>",
        "<language>",
        "<responseType>",
        "<senderName>",
        "<parameter>",
    ] {
        assert!(
            import.not_carried.iter().any(|e| e == element),
            "{element} missing from {:?}",
            import.not_carried
        );
    }
}

#[test]
fn an_alert_written_out_reads_back_the_same() {
    let alert = from_cap_xml(FLOOD).unwrap().alert;
    let xml = to_cap_xml(&alert, &no_lookup);
    assert!(xml.contains("<scope>Public</scope>"), "{xml}");
    assert!(
        xml.contains("<sent>2026-11-21T13:30:00-00:00</sent>"),
        "{xml}"
    );
    let again = from_cap_xml(&xml).unwrap();
    assert_eq!(again.alert, alert);
    assert!(again.not_carried.is_empty(), "{:?}", again.not_carried);
}

#[test]
fn an_update_names_the_alert_it_replaces_as_a_cap_triple() {
    let mut update = Alert::from_pb(sample_flood("flood-2", 1_800_000_000_000)).unwrap();
    update.msg_type = AlertMsgType::Update;
    update.references = vec!["flood-1".into()];
    let earlier = Timestamp::from_unix_millis(1_799_999_000_000);
    let lookup = |id: &str| (id == "flood-1").then(|| ("agency@example.org".to_owned(), earlier));
    let xml = to_cap_xml(&update, &lookup);
    let triple = format!("agency@example.org,flood-1,{}", format_time(earlier));
    assert!(xml.contains(&triple), "{xml}");
    assert_eq!(from_cap_xml(&xml).unwrap().alert.references, ["flood-1"]);
}

fn edited(from: &str, to: &str) -> String {
    assert!(FLOOD.contains(from), "the example has no {from:?}");
    FLOOD.replacen(from, to, 1)
}

fn refused(xml: &str) -> (CapError, String) {
    let e = from_cap_xml(xml).expect_err("a bad document was accepted");
    let text = e.to_string();
    (e, text)
}

#[test]
fn bad_documents_are_refused_with_the_element_and_line() {
    let (e, text) = refused(&edited(
        "<identifier>DE-SN-LZ-2026-1121-001</identifier>",
        "",
    ));
    assert!(
        matches!(
            e,
            CapError::Missing {
                element: "identifier",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(text.contains("line 4"), "{text}");

    let (_, text) = refused(&edited(
        "<status>Exercise</status>",
        "<status>Real</status>",
    ));
    assert!(
        text.contains("\"Real\"") && text.contains("Actual, Exercise"),
        "{text}"
    );

    let (_, text) = refused(&edited(
        "<severity>Severe</severity>",
        "<severity>severe</severity>",
    ));
    assert!(
        text.contains("<severity>") && text.contains("line 19"),
        "{text}"
    );

    let (e, text) = refused(&edited("2026-11-21T14:30:00+01:00", "2026-11-21T13:30:00Z"));
    assert!(
        matches!(
            e,
            CapError::BadTime {
                element: "sent",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(text.contains("-00:00"), "{text}");
    let (e, _) = refused(&edited("2026-11-21T14:30:00+01:00", "21/11/2026 14:30"));
    assert!(matches!(e, CapError::BadTime { .. }), "{e:?}");

    let (_, text) = refused(&edited(
        "<scope>Public</scope>",
        "<scope>Restricted</scope>",
    ));
    assert!(text.contains("only Public"), "{text}");

    let (_, text) = refused(&edited(
        "<category>Safety</category>",
        "<category>Met</category>",
    ));
    assert!(text.contains("more than once"), "{text}");

    let (_, text) = refused(&edited("<expires>2036-11-21T20:30:00+01:00</expires>", ""));
    assert!(text.contains("<expires>"), "{text}");

    // Expires before sent: the chain's own check.
    let (e, _) = refused(&edited(
        "2036-11-21T20:30:00+01:00",
        "2020-01-01T00:00:00+00:00",
    ));
    assert!(matches!(e, CapError::Invalid(_)), "{e:?}");

    let (_, text) = refused(&edited(
        "51.3300,12.3200 51.3300,12.3450",
        "51.33;12.32 51.33,12.345",
    ));
    assert!(text.contains("<polygon>"), "{text}");

    let info_start = FLOOD.find("<info>").unwrap();
    let info_end = FLOOD.find("</info>").unwrap() + "</info>".len();
    let two = format!(
        "{}{}{}",
        &FLOOD[..info_end],
        &FLOOD[info_start..info_end],
        &FLOOD[info_end..]
    );
    let (_, text) = refused(&two);
    assert!(text.contains("2 <info> blocks"), "{text}");

    let (e, _) = refused(&FLOOD.replace("cap:1.2", "cap:1.1"));
    assert!(matches!(e, CapError::NotCap(_)), "{e:?}");
    let (e, _) = refused("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\"><identifier>");
    assert!(matches!(e, CapError::Xml(_)), "{e:?}");
    let (e, _) = refused("<html><body>not an alert</body></html>");
    assert!(matches!(e, CapError::NotCap(_)), "{e:?}");
}

#[test]
fn hostile_documents_are_bounded() {
    // An entity expansion bomb: DTDs are refused outright.
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x \"xxxxxxxxxx\">\
                <!ENTITY y \"&x;&x;&x;&x;&x;&x;&x;&x;&x;&x;\">]><alert>&y;</alert>";
    assert!(matches!(from_cap_xml(bomb), Err(CapError::Xml(_))));
    let big = format!("{FLOOD}{}", " ".repeat(MAX_CAP_LEN));
    assert!(matches!(from_cap_xml(&big), Err(CapError::TooLarge(_))));
    let many = FLOOD.replace(
        "<note>",
        &format!("{}<note>", "<code>x</code>".repeat(30_000)),
    );
    assert!(from_cap_xml(&many).is_err());
}

fn text() -> impl Strategy<Value = String> {
    // Letters, spaces and the characters XML must escape.
    "[a-zA-Z0-9<>&\"' ]{0,40}[a-zA-Z0-9<>&]"
}

proptest! {
    #[test]
    fn any_valid_alert_survives_a_round_trip_through_cap(
        headline in text(),
        description in text(),
        sender in "[a-z]{1,12}@[a-z]{1,12}\\.org",
        lat in -80.0f64..80.0,
        lon in -170.0f64..170.0,
        radius in 0.1f64..500.0,
        sent_s in 1_000_000_000u64..2_000_000_000,
        hours in 1u64..1000,
    ) {
        let mut pb = sample_flood("prop-1", sent_s * 1000);
        pb.sender = sender;
        pb.headline = headline;
        pb.description = description;
        pb.expires_ms = (sent_s + hours * 3600) * 1000;
        pb.area = Some(lifeline_consensus::wire::pb::AlertArea {
            description: "a circle".into(),
            shape: Some(lifeline_consensus::wire::pb::alert_area::Shape::Circle(
                lifeline_consensus::wire::pb::Circle {
                    center: Some(lifeline_consensus::wire::pb::Point { lat, lon }),
                    radius_km: radius,
                },
            )),
        });
        let alert = Alert::from_pb(pb).unwrap();
        let xml = to_cap_xml(&alert, &no_lookup);
        let back = from_cap_xml(&xml).unwrap().alert;
        // Texts are trimmed, as CAP readers do.
        let mut expected = alert.clone();
        expected.headline = expected.headline.trim().to_owned();
        expected.description = expected.description.trim().to_owned();
        prop_assert_eq!(back, expected);
    }
}
