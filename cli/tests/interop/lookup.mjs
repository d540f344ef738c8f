// A js-libp2p peer, another implementation of libp2p than lifeline's: it
// dials a lifeline node, pings it, reads its identify record, and looks up a
// second lifeline node through the first one's Kademlia DHT. Then it writes
// 8 MiB on one mesh stream, as a peer carrying chain blocks would, and pings
// again on the same connection. Prints one JSON line: what it saw. Used by
// cli/tests/interop.rs.
//
//   node lookup.mjs /ip4/127.0.0.1/tcp/PORT/p2p/ID_OF_A ID_OF_B

// libp2p 3 expects Node 22, which has Promise.withResolvers; Node 20 does not.
if (!Promise.withResolvers) {
  Promise.withResolvers = () => {
    let resolve, reject
    const promise = new Promise((yes, no) => { resolve = yes; reject = no })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { multiaddr } = await import('@multiformats/multiaddr')
const { peerIdFromString } = await import('@libp2p/peer-id')

const [target, wanted] = process.argv.slice(2)
if (!target || !wanted) {
  console.error('usage: node lookup.mjs MULTIADDR_OF_A ID_OF_B')
  process.exit(2)
}

const peer = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    // lifeline's own DHT; loopback addresses are fine in a test.
    dht: kadDHT({
      protocol: '/lifeline/kad/1.0.0',
      clientMode: true,
      peerInfoMapper: passthroughMapper,
    }),
  },
})

const address = multiaddr(target)
const connection = await peer.dial(address)
// The first ping on a connection just opened was once refused with "Cannot
// write to a stream that is closed" (1 run in 7 on a cold machine, not seen
// again): it is tried up to three times, and how many it took is printed.
let rtt
let pingAttempts = 0
for (;;) {
  pingAttempts++
  try {
    rtt = await peer.services.ping.ping(address)
    break
  } catch (e) {
    if (pingAttempts >= 3) throw e
    await new Promise(r => setTimeout(r, 300))
  }
}

// Identify runs on connect; wait until its record is in the peer store.
let record
for (let i = 0; i < 50; i++) {
  record = await peer.peerStore.get(connection.remotePeer)
  if (record.protocols.length > 0) break
  await new Promise(r => setTimeout(r, 100))
}
const agent = record.metadata.get('AgentVersion')

const found = await peer.peerRouting.findPeer(peerIdFromString(wanted), {
  signal: AbortSignal.timeout(15000),
})
// A large transfer on one stream: js-libp2p's yamux sends data frames as
// large as the window the node grants (issue 23, item 14).
const MIB = 1024 * 1024
const stream = await connection.newStream('/lifeline/mesh/1')
const closed = new Promise(resolve => connection.addEventListener('close', () => resolve(true), { once: true }))
let sent = 0
for (let i = 0; i < 4; i++) {
  // A mesh frame (4-byte length, then protobuf field 1, a routing packet)
  // of 2 MiB of junk the node reads and then ignores: we are no neighbour.
  const body = 2 * MIB
  const varint = []
  for (let n = body; ; n = Math.floor(n / 128)) {
    if (n < 128) { varint.push(n); break }
    varint.push((n % 128) | 128)
  }
  const frame = new Uint8Array(4 + 1 + varint.length + body)
  new DataView(frame.buffer).setUint32(0, frame.length - 4)
  frame[4] = 0x0a
  frame.set(varint, 5)
  frame.fill(i + 1, 5 + varint.length)
  for (let at = 0; at < frame.length; at += 256 * 1024) {
    if (!stream.send(frame.subarray(at, Math.min(at + 256 * 1024, frame.length)))) {
      await Promise.race([stream.onDrain(), closed])
    }
  }
  sent += frame.length
}
await Promise.race([stream.close(), closed])
const lost = await Promise.race([closed, new Promise(resolve => setTimeout(() => resolve(false), 1000))])
let after_bulk_rtt_ms = null
if (!lost) {
  after_bulk_rtt_ms = await peer.services.ping.ping(address)
}
console.log(JSON.stringify({
  bulk_bytes: sent,
  connection_lost: lost,
  after_bulk_rtt_ms,
  rtt_ms: rtt,
  ping_attempts: pingAttempts,
  agent: agent ? new TextDecoder().decode(agent) : '',
  protocols: record.protocols,
  found: found.id.toString(),
  addrs: found.multiaddrs.map(String),
}))
await peer.stop()
