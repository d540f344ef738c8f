//! What a hostile neighbour can do to a router: garbage, forged classes,
//! SOS and broadcast floods from one key or many, replays, broadcasts that
//! ask for too many hops. None of it may panic the router. What the
//! neighbour did itself is counted against it; what it only relayed is
//! dropped over the limits but never blamed on it (issue 23, item 3).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lifeline_crypto::Identity;
use lifeline_routing::wire::{AckOutcome, Body, Found, Frame, Lookup, Message, Packet};
use lifeline_routing::{
    Address, Class, Config, Event, Kind, MemoryMessageStore, Misbehaviour, Router,
};
use proptest::prelude::*;

fn identity(name: &str) -> Identity {
    Identity::from_secret_bytes(blake3::hash(name.as_bytes()).as_bytes()).unwrap()
}

const NOW: u64 = 10_000_000;

/// A relay R with neighbours "attacker" and "destination".
fn relay(config: Config) -> (Router<MemoryMessageStore>, Address, Address) {
    let r = identity("relay");
    let mut router = Router::new(r, config, MemoryMessageStore::new(), [0; 32], NOW).unwrap();
    let attacker = Address::from(identity("attacker").id());
    let destination = Address::from(identity("destination").id());
    router.handle_link_up(NOW, attacker, 300);
    router.handle_link_up(NOW, destination, 300);
    (router, attacker, destination)
}

fn packet(frame: u64, bytes: Vec<u8>) -> Vec<u8> {
    Packet {
        frame,
        index: 0,
        count: 1,
        class: Class::P0,
        data: bytes,
    }
    .encode()
}

fn message(
    signer: &Identity,
    class: Class,
    to: Option<Address>,
    nonce: u64,
    created: u64,
) -> Vec<u8> {
    signed(signer, signer, class, Kind::Data, to, nonce, created)
}

/// A frame whose body names `origin` and whose signature is `signer`'s
/// (a forgery unless they are the same).
fn signed(
    origin: &Identity,
    signer: &Identity,
    class: Class,
    kind: Kind,
    to: Option<Address>,
    nonce: u64,
    created: u64,
) -> Vec<u8> {
    let body = Body {
        class,
        kind,
        destination: to,
        origin: Some(Address::from(origin.id())),
        created_ms: created,
        expires_ms: created + 3_600_000,
        area: None,
        nonce: nonce.to_le_bytes(),
        payload: b"SOS".to_vec(),
    };
    Frame::Message(Box::new(Message::new(body, Some(signer), 10))).encode()
}

fn counts(router: &Router<MemoryMessageStore>, who: &Address) -> Misbehaviour {
    router.misbehaviour(who).unwrap()
}

#[test]
fn an_sos_flood_from_one_key_is_cut_to_the_rate_limit() {
    let (mut router, attacker, destination) = relay(Config {
        misbehaviour_threshold: 50,
        ..Config::default()
    });
    let flooder = identity("attacker");
    // 100 SOS messages in one second: 100 times the allowed rate.
    for i in 0..100u64 {
        let t = NOW + i * 10;
        router.handle_packet(
            t,
            &attacker,
            &packet(i + 1, message(&flooder, Class::P0, Some(destination), i, t)),
        );
    }
    let forwarded = router.stats().message_transmissions;
    assert_eq!(forwarded, 3, "the burst of 3 goes through, nothing more");
    assert_eq!(counts(&router, &attacker).rate_limited, 97);
    let events: Vec<Event> = std::iter::from_fn(|| router.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Misbehaving { neighbour, .. } if *neighbour == attacker))
    );
}

/// Issue 23, item 3: Sybil origins behind an honest relay. The old router
/// counted every SOS over the neighbour's budget against the relay (440 of
/// 500 here, past the threshold of 100), so every neighbour of the relay
/// banned it and the mesh split.
#[test]
fn an_sos_flood_from_many_fresh_keys_hits_the_neighbour_budget_without_blaming_the_relay() {
    let (mut router, attacker, destination) = relay(Config::default());
    // 500 Sybil identities, one SOS each, all through the same neighbour.
    for i in 0..500u64 {
        let sybil = identity(&format!("sybil {i}"));
        router.handle_packet(
            NOW,
            &attacker,
            &packet(i + 1, message(&sybil, Class::P0, Some(destination), i, NOW)),
        );
    }
    let budget = u64::from(Config::default().neighbour_p0_burst);
    assert_eq!(router.stats().message_transmissions, budget);
    assert_eq!(router.stats().rate_limited, 500 - budget);
    assert_eq!(counts(&router, &attacker).total(), 0);
    assert!(
        !std::iter::from_fn(|| router.poll_event()).any(|e| matches!(e, Event::Misbehaving { .. })),
        "the relay was reported for what it only passed on"
    );
}

#[test]
fn p1_from_someone_who_is_not_an_authority_is_refused() {
    let (mut router, attacker, _) = relay(Config::default());
    let authority = identity("fire brigade");
    router.set_authorities([Address::from(authority.id())]);
    let fake = message(&identity("attacker"), Class::P1, None, 1, NOW);
    router.handle_packet(NOW, &attacker, &packet(1, fake));
    let real = message(&authority, Class::P1, None, 2, NOW);
    router.handle_packet(NOW, &attacker, &packet(2, real));
    let delivered: Vec<_> = std::iter::from_fn(|| router.poll_event())
        .filter_map(|e| match e {
            Event::Delivered(d) => Some(d.origin),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![Some(Address::from(authority.id()))]);
    assert_eq!(counts(&router, &attacker).unauthorized, 1);
}

#[test]
fn a_relay_cannot_change_a_signed_message() {
    let (mut router, attacker, destination) = relay(Config::default());
    let sos = message(&identity("someone"), Class::P0, Some(destination), 1, NOW);
    // Flip one byte of the body inside the frame: the signature no longer verifies.
    for position in [20, sos.len() / 2, sos.len() - 80] {
        let mut forged = sos.clone();
        forged[position] ^= 0x01;
        router.handle_packet(NOW, &attacker, &packet(position as u64, forged));
    }
    assert_eq!(router.stats().message_transmissions, 0);
    assert_eq!(counts(&router, &attacker).invalid, 3);
}

#[test]
fn expired_messages_are_dropped_and_only_their_origin_is_blamed() {
    let (mut router, attacker, destination) = relay(Config::default());
    // Someone else's (it may have expired on its way through the relay),
    // then the neighbour's own: only the second is blamed on it.
    for (n, origin, blamed) in [(1, "someone", 0), (2, "attacker", 1)] {
        let old = message(
            &identity(origin),
            Class::P0,
            Some(destination),
            n,
            NOW - 7_200_000,
        );
        router.handle_packet(NOW, &attacker, &packet(n, old));
        assert_eq!(router.stats().expired_arrivals, n);
        assert_eq!(counts(&router, &attacker).replays, blamed);
    }
    assert_eq!(router.stats().message_transmissions, 0);
}

#[test]
fn counts_against_a_neighbour_fade_and_it_can_be_reported_again() {
    let config = Config {
        misbehaviour_threshold: 4,
        ..Config::default()
    };
    let half_life = config.misbehaviour_half_life_ms;
    let (mut router, attacker, _) = relay(config);
    let garbage = |router: &mut Router<MemoryMessageStore>, t: u64, n: u64| {
        for i in 0..n {
            router.handle_packet(t, &attacker, &packet(t + i, vec![0xff; 9]));
        }
    };
    let reports = |router: &mut Router<MemoryMessageStore>| {
        std::iter::from_fn(|| router.poll_event())
            .filter(|e| matches!(e, Event::Misbehaving { .. }))
            .count()
    };
    // Three mistakes, then three more an hour later: never four at once.
    garbage(&mut router, NOW, 3);
    garbage(&mut router, NOW + 6 * half_life, 3);
    assert_eq!(counts(&router, &attacker).invalid, 3);
    assert_eq!(reports(&mut router), 0);
    // A burst is reported; once it has faded, the next burst is again.
    garbage(&mut router, NOW + 6 * half_life, 1);
    assert_eq!(reports(&mut router), 1);
    garbage(&mut router, NOW + 12 * half_life, 4);
    assert_eq!(reports(&mut router), 1);
}

/// A sealed (unsigned) P2 message for `to`, created now, good for an hour.
fn sealed_for(to: Address, nonce: u64, payload: Vec<u8>) -> Message {
    let body = Body {
        class: Class::P2,
        kind: Kind::Data,
        destination: Some(to),
        origin: None,
        created_ms: NOW,
        expires_ms: NOW + 3_600_000,
        area: None,
        nonce: nonce.to_le_bytes(),
        payload,
    };
    Message::new(body, None, 64)
}

/// A P3 broadcast (with an SOS as its payload, say) from one key.
fn broadcast(signer: Option<&Identity>, nonce: u64, hops: u32, hops_taken: u32) -> Vec<u8> {
    let body = Body {
        class: Class::P3,
        kind: Kind::Data,
        destination: None,
        origin: signer.map(|s| Address::from(s.id())),
        created_ms: NOW,
        expires_ms: NOW + 3_600_000,
        area: None,
        nonce: nonce.to_le_bytes(),
        payload: b"SOS".to_vec(),
    };
    let mut m = Message::new(body, signer, hops);
    m.hops_taken = hops_taken;
    Frame::Message(Box::new(m)).encode()
}

/// Issue 23, item 4: only P0 was limited, so one key could flood the mesh
/// with P3 broadcasts of up to 255 hops. The old router passed on all 200
/// of these, each with the 254 hops it was given.
#[test]
fn broadcasts_of_every_class_are_limited_per_origin_and_per_neighbour_and_in_hops() {
    let config = Config::default();
    let (mut router, attacker, destination) = relay(config.clone());
    let flooder = identity("flooder");
    for i in 0..200u64 {
        router.handle_packet(
            NOW,
            &attacker,
            &packet(i + 1, broadcast(Some(&flooder), i, 255, 1)),
        );
    }
    let burst = u64::from(config.broadcast_burst);
    assert_eq!(router.stats().message_transmissions, burst);
    assert_eq!(router.stats().rate_limited, 200 - burst);
    // Passed on with this node's hop limit, not the 254 left.
    let mut hops = Vec::new();
    while let Some(bytes) = router.poll_link(NOW, &destination) {
        if let Ok(p) = Packet::decode(&bytes)
            && let Ok(Frame::Message(m)) = Frame::decode(&p.data)
        {
            hops.push(m.hops_left);
        }
    }
    assert!(
        !hops.is_empty() && hops.iter().all(|&h| h < config.broadcast_hops),
        "{hops:?}"
    );
    // Many fresh keys through one neighbour: cut at the neighbour's budget,
    // and the neighbour (a relay, for all this node knows) is not blamed.
    let (mut router, attacker, _) = relay(config.clone());
    for i in 0..1_000u64 {
        let sybil = identity(&format!("sybil {i}"));
        router.handle_packet(
            NOW,
            &attacker,
            &packet(i + 1, broadcast(Some(&sybil), i, 16, 1)),
        );
    }
    let budget = u64::from(config.neighbour_broadcast_burst);
    assert_eq!(router.stats().message_transmissions, budget);
    assert_eq!(counts(&router, &attacker).total(), 0);
}

#[test]
fn an_unsigned_broadcast_goes_no_farther_than_one_hop() {
    let (mut router, attacker, _) = relay(Config::default());
    // From a neighbour: delivered here, passed on to nobody.
    router.handle_packet(NOW, &attacker, &packet(1, broadcast(None, 1, 16, 1)));
    // From farther away: dropped.
    router.handle_packet(NOW, &attacker, &packet(2, broadcast(None, 2, 16, 2)));
    let delivered = std::iter::from_fn(|| router.poll_event())
        .filter(|e| matches!(e, Event::Delivered(_)))
        .count();
    assert_eq!(delivered, 1);
    assert_eq!(router.stats().message_transmissions, 0);
    assert_eq!(router.stats().unsigned_dropped, 1);
}

#[test]
fn a_broadcast_replayed_within_the_window_is_dropped_as_a_duplicate() {
    let (mut router, attacker, _) = relay(Config::default());
    let alert = message(&identity("someone"), Class::P0, None, 1, NOW);
    for frame in 1..=5 {
        router.handle_packet(NOW, &attacker, &packet(frame, alert.clone()));
    }
    assert_eq!(router.stats().duplicates, 4);
    let delivered = std::iter::from_fn(|| router.poll_event())
        .filter(|e| matches!(e, Event::Delivered(_)))
        .count();
    assert_eq!(delivered, 1);
}

#[test]
fn packets_from_strangers_are_ignored() {
    let (mut router, _, destination) = relay(Config::default());
    let stranger = Address::from(identity("stranger").id());
    let sos = message(&identity("stranger"), Class::P0, Some(destination), 1, NOW);
    router.handle_packet(NOW, &stranger, &packet(1, sos));
    assert_eq!(router.stats().message_transmissions, 0);
    assert!(router.misbehaviour(&stranger).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_are_counted(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (mut router, attacker, _) = relay(Config::default());
        router.handle_packet(NOW, &attacker, &bytes);
        while router.poll_event().is_some() {}
        let c = counts(&router, &attacker);
        // Either it was refused and counted, or it was a harmless valid frame.
        prop_assert!(c.invalid <= 1);
    }

    #[test]
    fn arbitrary_frames_in_valid_packets_never_panic(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 1..20),
        counts_ in proptest::collection::vec(1u32..5, 1..20),
    ) {
        let (mut router, attacker, destination) = relay(Config::default());
        for (i, (data, count)) in frames.into_iter().zip(counts_).enumerate() {
            if data.is_empty() {
                continue;
            }
            let p = Packet { frame: i as u64 / 2, index: (i as u32) % count, count, class: Class::P3, data };
            router.handle_packet(NOW + i as u64, &attacker, &p.encode());
            while router.poll_link(NOW, &destination).is_some() {}
            while router.poll_link(NOW, &attacker).is_some() {}
        }
        router.handle_timeout(NOW + 1_000_000);
        while router.poll_event().is_some() {}
    }

    #[test]
    fn frames_round_trip(
        ids in proptest::collection::vec(any::<[u8; 16]>(), 0..50),
        seqno in any::<u32>(), metric in any::<u32>(), reach in any::<u32>(), dest in any::<[u8; 32]>(),
        landmark in any::<[u8; 32]>(), issued in any::<u64>(),
    ) {
        use lifeline_routing::routes::RouteMessage;
        use lifeline_routing::wire::Location;
        use lifeline_routing::MessageId;
        let pull = Frame::Pull(ids.iter().map(|i| MessageId(*i)).collect());
        prop_assert_eq!(Frame::decode(&pull.encode()).unwrap(), pull);
        let control = Frame::Control(vec![
            RouteMessage::Update { destination: Address(dest), seqno, metric, reach },
            RouteMessage::Digest { digest: ids.first().copied().unwrap_or([7; 16]) },
            RouteMessage::DumpRequest,
        ]);
        prop_assert_eq!(Frame::decode(&control.encode()).unwrap(), control);
        let location = Location::new(&identity("someone"), Address(dest), Address(landmark), issued);
        let locate = Frame::Locate(Box::new(location));
        let decoded = Frame::decode(&locate.encode()).unwrap();
        prop_assert_eq!(&decoded, &locate);
        let Frame::Locate(decoded) = decoded else { unreachable!() };
        prop_assert!(decoded.verify());
        let lookup = Frame::Lookup(Box::new(Lookup {
            home: Address(landmark),
            node: Address(dest),
            asker: Address(landmark.map(|b| b ^ 1)),
            asker_landmark: Address(dest.map(|b| b ^ 1)),
        }));
        prop_assert_eq!(Frame::decode(&lookup.encode()).unwrap(), lookup);
        let found = Frame::Found(Box::new(Found {
            asker: Address(landmark),
            asker_landmark: Address(dest),
            location: *decoded,
        }));
        let decoded = Frame::decode(&found.encode()).unwrap();
        prop_assert_eq!(&decoded, &found);
        let Frame::Found(decoded) = decoded else { unreachable!() };
        prop_assert!(decoded.location.verify());
    }
}

#[test]
fn an_answer_without_a_registration_or_with_a_short_address_is_refused() {
    use lifeline_routing::wire::FrameError;
    // Hand-made frames a decoder could meet: a Found without its Locate,
    // and a Lookup whose asker is one byte short.
    let mut found = Vec::new();
    prost::encoding::encode_key(8, prost::encoding::WireType::LengthDelimited, &mut found);
    let body = [&[0x0a, 32][..], &[1; 32], &[0x12, 32], &[2; 32]].concat();
    prost::encoding::encode_varint(body.len() as u64, &mut found);
    found.extend_from_slice(&body);
    let err = Frame::decode(&found).unwrap_err();
    assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
    assert!(err.to_string().contains("location"), "{err}");
    let mut lookup = Vec::new();
    prost::encoding::encode_key(7, prost::encoding::WireType::LengthDelimited, &mut lookup);
    let body = [
        &[0x0a, 32][..],
        &[1; 32],
        &[0x12, 32],
        &[2; 32],
        &[0x1a, 31],
        &[3; 31],
        &[0x22, 32],
        &[4; 32],
    ]
    .concat();
    prost::encoding::encode_varint(body.len() as u64, &mut lookup);
    lookup.extend_from_slice(&body);
    let err = Frame::decode(&lookup).unwrap_err();
    assert!(err.to_string().contains("asker"), "{err}");
}

#[test]
fn a_forged_answer_to_a_lookup_is_refused_and_teaches_nothing() {
    use lifeline_routing::wire::Location;
    let config = Config {
        zone_hops: 2,
        ..Config::default()
    };
    let (mut router, attacker, _) = relay(config);
    let me = Address::from(identity("relay").id());
    let someone = identity("someone");
    let mut location = Location::new(&someone, Address([1; 32]), Address([2; 32]), NOW);
    // A neighbour sends us the "answer" to a lookup with the landmark
    // swapped for one it likes: the signature no longer holds.
    location.landmark = Address([3; 32]);
    let found = Frame::Found(Box::new(Found {
        asker: me,
        asker_landmark: Address([4; 32]),
        location,
    }));
    router.handle_packet(NOW, &attacker, &packet(1, found.encode()));
    let stats = router.stats();
    assert_eq!((stats.locations_refused, stats.lookups_answered), (1, 0));
}

#[test]
fn what_was_delivered_or_passed_on_stays_refused_after_a_restart() {
    let (mut router, attacker, _) = relay(Config::default());
    let me = Address::from(identity("relay").id());
    let someone = identity("someone");
    let letter = message(&someone, Class::P0, Some(me), 1, NOW);
    let alert = message(&someone, Class::P0, None, 2, NOW);
    router.handle_packet(NOW, &attacker, &packet(1, letter.clone()));
    router.handle_packet(NOW, &attacker, &packet(2, alert.clone()));
    let delivered = std::iter::from_fn(|| router.poll_event())
        .filter(|e| matches!(e, Event::Delivered(_)))
        .count();
    assert_eq!(delivered, 2);
    // The process stops; a new one starts from the same store.
    let store = router.into_store();
    // The letter as delivered; the alert as passed on and as delivered.
    assert_eq!(store.seen_len(), 3);
    let later = NOW + 60_000;
    let mut router =
        Router::new(identity("relay"), Config::default(), store, [1; 32], later).unwrap();
    router.handle_link_up(later, attacker, 300);
    router.handle_link_up(later, Address::from(identity("destination").id()), 300);
    // The attacker replays both, within their lifetime.
    router.handle_packet(later, &attacker, &packet(3, letter));
    router.handle_packet(later, &attacker, &packet(4, alert));
    let delivered = std::iter::from_fn(|| router.poll_event())
        .filter(|e| matches!(e, Event::Delivered(_)))
        .count();
    assert_eq!(delivered, 0, "nothing is delivered a second time");
    assert_eq!(router.stats().duplicates, 2);
    while router
        .poll_link(later, &Address::from(identity("destination").id()))
        .is_some()
    {}
    assert_eq!(
        router.stats().message_transmissions,
        0,
        "the alert is not flooded again"
    );
}

/// A message that comes back from the neighbour it was handed to (routes
/// that disagree for a moment) stays in custody here: the neighbour forgets
/// it on our acknowledgement, so its acknowledgement of our hand-over must
/// not make us forget it too. Before, both forgot it and it was lost (46
/// P0 messages went round this way in a scoped 1,000-node run).
#[test]
fn a_message_handed_back_by_the_next_hop_is_not_lost() {
    use lifeline_routing::routes::RouteMessage;
    use lifeline_routing::wire::AckOutcome;
    let (mut router, upstream, next) = relay(Config::default());
    let far = Address::from(identity("far").id());
    let update = Frame::Control(vec![RouteMessage::Update {
        destination: far,
        seqno: 1,
        metric: 300,
        reach: 0,
    }]);
    router.handle_packet(NOW, &next, &packet(1, update.encode()));
    assert_eq!(router.next_hop(&far), Some(next));
    let sender = identity("sender");
    let bytes = message(&sender, Class::P0, Some(far), 1, NOW);
    let Ok(Frame::Message(m)) = Frame::decode(&bytes) else {
        panic!("our own frame decodes")
    };
    router.handle_packet(NOW, &upstream, &packet(1, bytes.clone()));
    while router.poll_link(NOW, &next).is_some() {}
    while router.poll_link(NOW, &upstream).is_some() {}
    assert!(router.holds(&m.id), "in flight to the next hop");
    // The next hop sends it straight back, then acknowledges our hand-over.
    router.handle_packet(NOW + 10, &next, &packet(2, bytes));
    let ack = Frame::Ack {
        id: m.id,
        outcome: AckOutcome::Forwarding,
    };
    router.handle_packet(NOW + 20, &next, &packet(3, ack.encode()));
    assert!(
        router.holds(&m.id),
        "the only copy left is ours: the next hop forgot it on our acknowledgement"
    );
}

/// A frame whose body names `origin` but whose signature is `forger`'s.
fn forged(
    origin: &Identity,
    forger: &Identity,
    class: Class,
    kind: Kind,
    to: Option<Address>,
) -> Vec<u8> {
    signed(origin, forger, class, kind, to, 7, NOW)
}

/// Relays check a broadcast's signature only for a copy they have not seen
/// (each copy after the first costs nothing), and a forged first copy
/// must not make the real one look like a duplicate.
#[test]
fn a_forged_copy_of_a_broadcast_does_not_shut_out_the_real_one() {
    let (mut router, attacker, honest) = relay(Config::default());
    let someone = identity("someone");
    let fake = forged(&someone, &identity("attacker"), Class::P0, Kind::Data, None);
    let real = forged(&someone, &someone, Class::P0, Kind::Data, None);
    router.handle_packet(NOW, &attacker, &packet(1, fake));
    assert_eq!(counts(&router, &attacker).invalid, 1);
    router.handle_packet(NOW, &honest, &packet(1, real.clone()));
    let delivered = std::iter::from_fn(|| router.poll_event())
        .filter(|e| matches!(e, Event::Delivered(_)))
        .count();
    assert_eq!(delivered, 1, "the real broadcast is delivered");
    // Copies of it from other neighbours are dropped as duplicates.
    router.handle_packet(NOW, &attacker, &packet(2, real));
    assert_eq!(router.stats().duplicates, 1);
    assert_eq!(counts(&router, &attacker).invalid, 1);
}

/// A receipt of class P2 is checked by its destination only. A forged one
/// is dropped there, and not held against the neighbour that brought it:
/// relays do not check it, so an honest one may have.
#[test]
fn a_forged_receipt_is_dropped_by_its_destination_without_blaming_the_relay() {
    let (mut router, neighbour, _) = relay(Config::default());
    let me = Address::from(identity("relay").id());
    let claimed = identity("claimed recipient");
    let fake = forged(
        &claimed,
        &identity("forger"),
        Class::P2,
        Kind::Receipt,
        Some(me),
    );
    router.handle_packet(NOW, &neighbour, &packet(1, fake));
    let delivered = std::iter::from_fn(|| router.poll_event())
        .filter(|e| matches!(e, Event::Delivered(_) | Event::Receipt { .. }))
        .count();
    assert_eq!(delivered, 0);
    assert_eq!(router.stats().forged_dropped, 1);
    assert_eq!(counts(&router, &neighbour).invalid, 0);
}

/// The simulator's peek at a message frame sees the body the router
/// decodes, and nothing in frames that are not messages.
#[test]
fn a_peek_at_a_message_frame_sees_the_decoded_body() {
    let sender = identity("sender");
    let far = Address::from(identity("far").id());
    let bytes = message(&sender, Class::P2, Some(far), 1, NOW);
    let Ok(Frame::Message(m)) = Frame::decode(&bytes) else {
        panic!("our own frame decodes")
    };
    assert_eq!(Frame::peek_body(&bytes), Some(m.body));
    let control =
        Frame::Control(vec![lifeline_routing::routes::RouteMessage::DumpRequest]).encode();
    assert_eq!(Frame::peek_body(&control), None);
    assert_eq!(Frame::peek_body(&bytes[..bytes.len() / 2]), None);
}

/// Issue 23, item 5: a neighbour that sees a summary pulls every waiting
/// message, acknowledges it, and drops it. The old router handed custody to
/// any puller, so the message was gone from the relay; now a puller that
/// is not closer by the relay's own table gets a copy, and custody stays.
#[test]
fn a_neighbour_that_pulls_and_drops_takes_no_custody_away() {
    let (mut router, attacker, _) = relay(Config::default());
    let far = Address::from(identity("far away").id());
    let m = sealed_for(far, 9, b"for someone out of reach".to_vec());
    let id = m.id;
    let mut p = Packet {
        frame: 1,
        index: 0,
        count: 1,
        class: Class::P2,
        data: Frame::Message(Box::new(m)).encode(),
    };
    router.handle_packet(NOW, &attacker, &p.encode());
    router.flush();
    assert!(router.holds(&id), "the relay took custody");
    // The attacker pulls it, twice, and acknowledges custody each time.
    for n in 2..6u64 {
        p.frame = n;
        p.data = if n % 2 == 0 {
            Frame::Pull(vec![id]).encode()
        } else {
            Frame::Ack {
                id,
                outcome: AckOutcome::Holding,
            }
            .encode()
        };
        router.handle_packet(NOW + n, &attacker, &p.encode());
        while router.poll_link(NOW + n, &attacker).is_some() {}
    }
    assert!(router.holds(&id), "a pull took the message out of custody");
    assert_eq!(
        router.stats().message_transmissions,
        1,
        "one copy, not one per pull"
    );
}

/// Issue 23, item 7: one neighbour's P2 flood fills custody. The old router
/// evicted the oldest messages first, whoever handed them over: all ten of
/// the honest neighbour's messages went. Now the neighbour that handed over
/// the most gives way first, so the flood evicts its own.
#[test]
fn one_neighbours_flood_evicts_its_own_messages_not_everyone_elses() {
    let (mut router, attacker, _) = relay(Config {
        custody_max_messages: 40,
        ..Config::default()
    });
    let honest = Address::from(identity("honest").id());
    router.handle_link_up(NOW, honest, 300);
    let far = Address::from(identity("far away").id());
    let held = |n: u64| sealed_for(far, n, vec![1; 64]);
    let mut honest_ids = Vec::new();
    for n in 0..10u64 {
        let m = held(n);
        honest_ids.push(m.id);
        let frame = Frame::Message(Box::new(m)).encode();
        let p = Packet {
            frame: n + 1,
            index: 0,
            count: 1,
            class: Class::P2,
            data: frame,
        };
        router.handle_packet(NOW + n, &honest, &p.encode());
    }
    for n in 0..500u64 {
        let frame = Frame::Message(Box::new(held(1_000 + n))).encode();
        let p = Packet {
            frame: n + 1,
            index: 0,
            count: 1,
            class: Class::P2,
            data: frame,
        };
        router.handle_packet(NOW + 100 + n, &attacker, &p.encode());
    }
    router.flush();
    let kept = honest_ids.iter().filter(|id| router.holds(id)).count();
    assert_eq!(kept, 10, "the flood evicted honest messages");
    assert_eq!(router.custody().0, 40);
}

fn delivered_origins(router: &mut Router<MemoryMessageStore>) -> Vec<Option<Address>> {
    std::iter::from_fn(|| router.poll_event())
        .filter_map(|e| match e {
            Event::Delivered(d) => Some(d.origin),
            _ => None,
        })
        .collect()
}

/// Issue 23, item 8: a neighbour fills the bounded cache of delivered ids
/// with fresh messages, which moves its horizon to now. The old router then
/// took any message created before that and not in the cache for a replay:
/// an honest letter that spent a minute on its way was acknowledged as
/// delivered and dropped (and so was one arriving after a restart with more
/// stored ids than the cache holds). Now the store, which keeps every id
/// until its message expires, decides those.
#[test]
fn a_flood_of_fresh_ids_does_not_make_a_late_letter_look_like_a_replay() {
    let config = Config {
        seen_capacity: 8,
        ..Config::default()
    };
    let (mut router, attacker, _) = relay(config.clone());
    let me = Address::from(identity("relay").id());
    let flood: Vec<Vec<u8>> = (0..40u64)
        .map(|i| {
            let sybil = identity(&format!("sybil {i}"));
            message(&sybil, Class::P2, Some(me), i, NOW)
        })
        .collect();
    for (i, m) in flood.iter().enumerate() {
        router.handle_packet(NOW, &attacker, &packet(i as u64 + 1, m.clone()));
        router.flush();
    }
    assert_eq!(delivered_origins(&mut router).len(), 40);
    // A letter written a minute ago, held up on its way, arrives now.
    let friend = identity("friend");
    let late = message(&friend, Class::P2, Some(me), 1, NOW - 60_000);
    router.handle_packet(NOW + 1, &attacker, &packet(100, late.clone()));
    assert_eq!(
        delivered_origins(&mut router),
        vec![Some(Address::from(friend.id()))],
        "the late letter was taken for a replay"
    );
    // What the cache forgot is still refused: a replay of the first.
    router.handle_packet(NOW + 2, &attacker, &packet(101, flood[0].clone()));
    router.handle_packet(NOW + 2, &attacker, &packet(102, late.clone()));
    assert!(
        delivered_origins(&mut router).is_empty(),
        "a replay was delivered"
    );
    assert!(router.stats().seen_lookups >= 2);

    // A restart with 41 stored ids and room for 8.
    let later = NOW + 120_000;
    let store = router.into_store();
    let mut router = Router::new(identity("relay"), config, store, [1; 32], later).unwrap();
    router.handle_link_up(later, attacker, 300);
    let another = message(&friend, Class::P2, Some(me), 2, NOW + 30_000);
    router.handle_packet(later, &attacker, &packet(1, late));
    router.handle_packet(later, &attacker, &packet(2, flood[5].clone()));
    router.handle_packet(later, &attacker, &packet(3, another));
    assert_eq!(
        delivered_origins(&mut router),
        vec![Some(Address::from(friend.id()))],
        "after a restart: the replays refused, the late letter delivered"
    );
}

/// Issue 23, items 3 and 7: once a neighbour's P0 budget is spent on SOS
/// signed by fresh keys, a registered person's SOS through the same
/// neighbour still goes through: origins the chain vouches for have a
/// budget of their own. With the old router it was refused like the flood.
#[test]
fn a_registered_persons_sos_passes_a_flood_from_fresh_keys() {
    let (mut router, attacker, destination) = relay(Config::default());
    let person = identity("registered person");
    router.set_registered([Address::from(person.id())]);
    for i in 0..200u64 {
        let sybil = identity(&format!("sybil {i}"));
        router.handle_packet(
            NOW,
            &attacker,
            &packet(i + 1, message(&sybil, Class::P0, Some(destination), i, NOW)),
        );
    }
    let budget = u64::from(Config::default().neighbour_p0_burst);
    assert_eq!(router.stats().message_transmissions, budget);
    router.handle_packet(
        NOW,
        &attacker,
        &packet(
            1_000,
            message(&person, Class::P0, Some(destination), 7, NOW),
        ),
    );
    assert_eq!(
        router.stats().message_transmissions,
        budget + 1,
        "the registered person's SOS was held back by the flood"
    );
    // Not registered: refused like the rest.
    router.note_registered(Address::from(person.id()), false);
    router.handle_packet(
        NOW,
        &attacker,
        &packet(
            1_001,
            message(&person, Class::P0, Some(destination), 8, NOW),
        ),
    );
    assert_eq!(router.stats().message_transmissions, budget + 1);
}

/// Issue 23, item 7: custody full of SOS from fresh keys. A registered
/// person's SOS takes the place of one of those, and a flood of more fresh
/// keys evicts its own kind, never the registered SOS. With the old router
/// the flood's neighbour share gave way oldest first, the registered SOS
/// among them.
#[test]
fn sos_from_fresh_keys_cannot_evict_a_registered_persons_sos_from_custody() {
    let (mut router, attacker, _) = relay(Config {
        custody_max_messages: 20,
        neighbour_p0_burst: 10_000,
        ..Config::default()
    });
    // Custody: the destination is unreachable, so everything waits.
    let far = Address::from(identity("far away").id());
    let person = identity("registered person");
    router.set_registered([Address::from(person.id())]);
    let sos = |who: &Identity, n: u64| {
        let bytes = message(who, Class::P0, Some(far), n, NOW);
        let Frame::Message(m) = Frame::decode(&bytes).unwrap() else {
            unreachable!()
        };
        (m.id, bytes)
    };
    let (mine, bytes) = sos(&person, 0);
    router.handle_packet(NOW, &attacker, &packet(1, bytes));
    for i in 0..200u64 {
        let (_, bytes) = sos(&identity(&format!("sybil {i}")), i);
        router.handle_packet(NOW + 1 + i, &attacker, &packet(i + 2, bytes));
    }
    router.flush();
    // The registered SOS, and a quarter of the quota for fresh keys.
    assert_eq!(router.custody().0, 1 + 20 / 4);
    assert!(router.holds(&mine), "the flood evicted the registered SOS");
}

/// Issue 23, item 7: a custody full of people's messages (P2) waiting for a
/// path, then a flood of SOS signed by fresh keys. Before, P0 outranked
/// every P2, so the flood evicted them all; now SOS from keys nobody knows
/// take at most a quarter of the quota and displace only bulk and their
/// own kind.
#[test]
fn sos_from_fresh_keys_cannot_crowd_out_peoples_messages() {
    let (mut router, attacker, _) = relay(Config {
        custody_max_messages: 40,
        neighbour_p0_burst: 10_000,
        ..Config::default()
    });
    let honest = Address::from(identity("honest").id());
    router.handle_link_up(NOW, honest, 300);
    let far = Address::from(identity("far away").id());
    let mut letters = Vec::new();
    for n in 0..30u64 {
        let m = sealed_for(far, n, vec![1; 64]);
        letters.push(m.id);
        let p = Packet {
            frame: n + 1,
            index: 0,
            count: 1,
            class: Class::P2,
            data: Frame::Message(Box::new(m)).encode(),
        };
        router.handle_packet(NOW + n, &honest, &p.encode());
    }
    for i in 0..300u64 {
        let sybil = identity(&format!("sybil {i}"));
        let bytes = message(&sybil, Class::P0, Some(far), i, NOW);
        router.handle_packet(NOW + 100 + i, &attacker, &packet(i + 1, bytes));
    }
    router.flush();
    let kept = letters.iter().filter(|id| router.holds(id)).count();
    assert_eq!(kept, 30, "SOS from fresh keys evicted people's messages");
    assert!(router.custody().0 <= 40);
}

/// The delay probes `router` sends `to` in what it hands out now, by the
/// time each carries (µs).
fn probes_out(router: &mut Router<MemoryMessageStore>, now_ms: u64, to: &Address) -> Vec<u64> {
    let mut probes = Vec::new();
    while let Some(bytes) = router.poll_link(now_ms, to) {
        let packet = Packet::decode(&bytes).unwrap();
        if packet.count == 1
            && let Ok(Frame::Timing { probe: Some(t), .. }) = Frame::decode(&packet.data)
        {
            probes.push(t);
        }
    }
    probes
}

/// A neighbour that bulk goes to holds the echoes of two delay probes
/// and sends them together, both late. The router once read the pair as
/// a link that carried everything sent between the probes within a
/// microsecond, and the pace's bounds crossed: `f64::clamp` panicked and
/// took the whole node down (a relay died so under load, line_latency,
/// 2026-12-07). Any neighbour could do it on purpose. Now the pair
/// measures nothing, and the pace does not jump.
#[test]
fn echoes_held_and_sent_together_neither_panic_the_router_nor_unpace_bulk() {
    let mut router = Router::new(
        identity("sender"),
        Config::default(),
        MemoryMessageStore::new(),
        [0; 32],
        NOW,
    )
    .unwrap();
    let attacker = Address::from(identity("attacker").id());
    router.handle_link_up(NOW, attacker, 300);
    let route = Frame::Control(vec![lifeline_routing::routes::RouteMessage::Update {
        destination: attacker,
        seqno: 1,
        metric: 0,
        reach: 0,
    }]);
    router.handle_packet(NOW, &attacker, &packet(1, route.encode()));
    for i in 0..8u8 {
        let request = lifeline_routing::SendRequest {
            class: Class::P3,
            destination: lifeline_routing::Destination::Node(attacker),
            payload: vec![i; 200_000],
            ttl_ms: None,
        };
        router.send(NOW, request).unwrap();
    }
    // A second of honest echoes, each 1 ms after its probe: the pacer
    // learns the hop's base delay and paces.
    let mut echo_at: Vec<(u64, u64)> = Vec::new();
    let at = |ms: u64| (NOW + ms) * 1000;
    for ms in 0..1000 {
        router.set_clock_us(at(ms));
        router.handle_timeout(NOW + ms);
        for (due, probe) in std::mem::take(&mut echo_at) {
            if due <= at(ms) {
                let echo = Frame::Timing {
                    unit: lifeline_routing::wire::TimeUnit::Us,
                    probe: None,
                    echo: Some(probe),
                    received: None,
                };
                router.handle_packet(NOW + ms, &attacker, &packet(1_000 + ms, echo.encode()));
            } else {
                echo_at.push((due, probe));
            }
        }
        for probe in probes_out(&mut router, NOW + ms, &attacker) {
            echo_at.push((probe + 1000, probe));
        }
    }
    let before = router.pace(&attacker).unwrap();
    assert!(before.pacing, "{before:?}");
    // Then it holds two probes' echoes and sends both 200 ms late, 1 µs
    // apart; bulk went between the two probes.
    let mut held = Vec::new();
    let mut ms = 1000;
    while held.len() < 2 {
        router.set_clock_us(at(ms));
        router.handle_timeout(NOW + ms);
        held.extend(probes_out(&mut router, NOW + ms, &attacker));
        ms += 1;
    }
    let late = held[1] + 200_000;
    for (k, probe) in held[..2].iter().enumerate() {
        router.set_clock_us(late + k as u64);
        let echo = Frame::Timing {
            unit: lifeline_routing::wire::TimeUnit::Us,
            probe: None,
            echo: Some(*probe),
            received: None,
        };
        router.handle_packet(
            late / 1000,
            &attacker,
            &packet(9_000 + k as u64, echo.encode()),
        );
    }
    let after = router.pace(&attacker).unwrap();
    assert!(
        after.rate_bytes_per_s <= before.rate_bytes_per_s,
        "{before:?} before, {after:?} after"
    );
}
