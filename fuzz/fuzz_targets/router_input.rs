//! A router fed arbitrary packets from a neighbour, with time passing and
//! links going down and up, never panics and keeps its custody bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline_crypto::Identity;
use lifeline_routing::{Address, Config, MemoryMessageStore, Router};

fn address(seed: u8) -> Address {
    let id = Identity::from_secret_bytes(&[seed; 32]).expect("any 32 bytes are a key");
    Address::from(id.id())
}

fuzz_target!(|data: &[u8]| {
    let me = Identity::from_secret_bytes(&[1; 32]).expect("any 32 bytes are a key");
    let config = Config {
        custody_max_messages: 16,
        ..Config::default()
    };
    let Ok(mut router) = Router::new(me, config, MemoryMessageStore::new(), [0; 32], 0) else {
        return;
    };
    let (a, b) = (address(2), address(3));
    router.handle_link_up(0, a, 300);
    router.handle_link_up(0, b, 300);
    let mut now = 0u64;
    // Chunks: the first byte says what happens, the rest is a packet.
    for chunk in data.split(|byte| *byte == 0xf7) {
        let Some((&op, rest)) = chunk.split_first() else {
            continue;
        };
        now += u64::from(op) * 97;
        match op % 8 {
            0 => router.handle_timeout(now),
            1 => router.handle_link_down(now, &a),
            2 => router.handle_link_up(now, a, u32::from(op) + 1),
            3 => router.handle_packet(now, &b, rest),
            _ => router.handle_packet(now, &a, rest),
        }
        while router.poll_link(now, &a).is_some() {}
        while router.poll_link(now, &b).is_some() {}
        while router.poll_event().is_some() {}
        assert!(router.custody().0 <= 16);
    }
});
