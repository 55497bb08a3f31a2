#!/usr/bin/env node
// Skiff client-compatibility scenario for kafkajs. See tests/compat/README.md.
// Environment: BOOTSTRAP, TOPIC, MODE, RECORDS; COMPAT_DEBUG=1 for kafkajs debug logs
// (every request with its API version).
//
// kafkajs has no assign()/group-less consumer: its only consumer joins a consumer group.
// The verify step therefore reads with explicit offsets through kafkajs' own cluster/broker
// layer (the code its consumer uses underneath): Metadata, ListOffsets and Fetch requests
// encoded and decoded by kafkajs, with no group coordinator involved.
'use strict'

const CLIENT = 'node-kafkajs'
const WATCHDOG_MS = 240 * 1000
const PARTITIONS = 3
const BASE_TS = 1700000000000
const SIZES = [0, 1, 17, 100, 1000, 5000, 20000]

const watchdog = setTimeout(() => {
  process.stderr.write(`[${CLIENT}] FAIL: watchdog: run exceeded ${WATCHDOG_MS / 1000}s\n`)
  process.exit(2)
}, WATCHDOG_MS)

const log = msg => process.stdout.write(`[${CLIENT}] ${msg}\n`)
class Mismatch extends Error {}
const fail = msg => {
  throw new Mismatch(msg)
}

const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const kafkajsVersion = require('kafkajs/package.json').version

// External codecs: kafkajs ships only none and gzip.
const SnappyCodec = require('kafkajs-snappy')
const LZ4Codec = require('kafkajs-lz4')
// @kafkajs/zstd fails to build on Node 20 (its native dependency cppzst does not compile
// against Node 20's C++17 headers), so zstd uses a minimal codec over zstd-napi instead.
const zstd = require('zstd-napi')
const ZstdCodec = () => ({
  async compress(encoder) {
    return zstd.compress(encoder.buffer)
  },
  async decompress(buffer) {
    return zstd.decompress(buffer)
  },
})
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec
CompressionCodecs[CompressionTypes.ZSTD] = ZstdCodec

// The client's default (none) first, then gzip, snappy, lz4, zstd.
const CODECS = [
  ['none', CompressionTypes.None],
  ['gzip', CompressionTypes.GZIP],
  ['snappy', CompressionTypes.Snappy],
  ['lz4', CompressionTypes.LZ4],
  ['zstd', CompressionTypes.ZSTD],
]

const PATTERN = Buffer.alloc(251 + Math.max(...SIZES))
for (let k = 0; k < PATTERN.length; k++) PATTERN[k] = k % 251
const keyOf = i => Buffer.from(`key-${i}`)
const valueOf = i => {
  const start = (i * 31) % 251
  return PATTERN.subarray(start, start + SIZES[i % 7])
}
const partitionCount = (records, p) => (records > p ? Math.floor((records - p + PARTITIONS - 1) / PARTITIONS) : 0)
const codecIndexOf = (i, records) => Math.floor((i * CODECS.length) / records)

async function createTopic(kafka, topic) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const created = await admin.createTopics({
      waitForLeaders: true,
      timeout: 30000,
      topics: [
        {
          topic,
          numPartitions: PARTITIONS,
          replicationFactor: 1,
          // The fixed 2023 create-timestamps would otherwise be past a 7-day time-based
          // retention and could be deleted between `produce` and `verify`.
          configEntries: [{ name: 'retention.ms', value: '-1' }],
        },
      ],
    })
    if (!created) fail(`createTopics(${topic}): topic already exists`)
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    const parts = md.topics[0].partitions
    if (parts.length !== PARTITIONS) fail(`topic ${topic}: metadata shows ${parts.length} partitions, expected ${PARTITIONS}`)
  } finally {
    await admin.disconnect()
  }
  log(`created topic ${topic} with ${PARTITIONS} partitions`)
}

async function produce(kafka, topic, records) {
  const CHUNK = 600 // messages per send() call (spread over the 3 partitions)
  let delivered = 0
  for (let c = 0; c < CODECS.length; c++) {
    const [name, compression] = CODECS[c]
    const block = []
    for (let i = 0; i < records; i++) if (codecIndexOf(i, records) === c) block.push(i)
    if (block.length === 0) continue
    const t0 = Date.now()
    const producer = kafka.producer({ allowAutoTopicCreation: false }) // idempotent: default (false)
    await producer.connect()
    try {
      for (let s = 0; s < block.length; s += CHUNK) {
        const chunk = block.slice(s, s + CHUNK)
        const messages = chunk.map(i => ({
          partition: i % PARTITIONS,
          key: keyOf(i),
          value: valueOf(i),
          headers: { idx: String(i), kind: 'compat' },
          timestamp: String(BASE_TS + i),
        }))
        let result
        try {
          result = await producer.send({ topic, acks: -1, compression, timeout: 30000, messages })
        } catch (e) {
          fail(`produce records ${chunk[0]}..${chunk[chunk.length - 1]} (codec ${name}) failed: ${e.stack || e}`)
        }
        // One RecordMetadata per partition; baseOffset is the offset of the chunk's first record there.
        for (let p = 0; p < PARTITIONS; p++) {
          const first = chunk.find(i => i % PARTITIONS === p)
          if (first === undefined) continue
          const n = chunk.filter(i => i % PARTITIONS === p).length
          const md = result.find(r => r.partition === p)
          if (!md) fail(`produce records ${chunk[0]}.. (codec ${name}): no delivery report for partition ${p}`)
          if (md.errorCode !== 0) fail(`produce to partition ${p} (codec ${name}): error code ${md.errorCode}`)
          const want = Math.floor(first / PARTITIONS)
          if (String(md.baseOffset) !== String(want)) {
            fail(`record ${first} (codec ${name}): delivered to partition ${p} base offset ${md.baseOffset}, expected ${want}`)
          }
          delivered += n
        }
      }
    } finally {
      await producer.disconnect()
    }
    log(`produced block codec=${name} records ${block[0]}..${block[block.length - 1]} (${block.length}) in ${((Date.now() - t0) / 1000).toFixed(2)}s`)
  }
  if (delivered !== records) fail(`delivered ${delivered} records, expected ${records}`)
  return records
}

function headerEntries(headers) {
  // kafkajs decodes headers into an object (insertion order = wire order; repeated keys become arrays).
  const out = []
  for (const [k, v] of Object.entries(headers || {})) {
    for (const one of Array.isArray(v) ? v : [v]) out.push([k, one === null ? null : Buffer.from(one).toString('latin1')])
  }
  return out
}

function checkRecord(m, p, k, records) {
  const i = PARTITIONS * k + p
  const where = `partition ${p} offset ${k} (record ${i})`
  if (i >= records) fail(`partition ${p} offset ${k}: unexpected record beyond the ${partitionCount(records, p)} produced`)
  if (m.isControlRecord) fail(`${where}: unexpected control record`)
  if (!m.key || !m.key.equals(keyOf(i))) fail(`${where}: key ${m.key && JSON.stringify(m.key.toString())}, expected "key-${i}"`)
  const exp = valueOf(i)
  if (m.value === null) fail(`${where}: value is null, expected ${exp.length} bytes`)
  if (!m.value.equals(exp)) {
    if (m.value.length !== exp.length) fail(`${where}: value length ${m.value.length}, expected ${exp.length}`)
    let j = 0
    while (m.value[j] === exp[j]) j++
    fail(`${where}: value byte ${j} is ${m.value[j]}, expected ${exp[j]}`)
  }
  const hdrs = headerEntries(m.headers)
  const want = [['idx', String(i)], ['kind', 'compat']]
  if (JSON.stringify(hdrs) !== JSON.stringify(want)) fail(`${where}: headers ${JSON.stringify(hdrs)}, expected ${JSON.stringify(want)}`)
  if (m.batchContext && m.batchContext.timestampType !== 0) {
    fail(`${where}: timestamp type ${m.batchContext.timestampType}, expected 0 (CreateTime)`)
  }
  if (String(m.timestamp) !== String(BASE_TS + i)) fail(`${where}: timestamp ${m.timestamp}, expected ${BASE_TS + i}`)
}

function internalCluster(kafka) {
  // Kafka#createCluster is stored under a private symbol; it builds the same Cluster object
  // that kafkajs' producer/consumer/admin use (broker pool, metadata, API-version negotiation).
  const sym = Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
  if (!sym) throw new Error('kafkajs internals changed: private:Kafka:createCluster not found')
  return kafka[sym]({ allowAutoTopicCreation: false, metadataMaxAge: 300000 })
}

async function verify(kafka, topic, records) {
  const expected = []
  for (let p = 0; p < PARTITIONS; p++) expected.push(partitionCount(records, p))

  // Earliest / latest through the public admin API (ListOffsets -2 / -1).
  const admin = kafka.admin()
  await admin.connect()
  const cluster = internalCluster(kafka)
  await cluster.connect()
  try {
    const offs = await admin.fetchTopicOffsets(topic)
    if (offs.length !== PARTITIONS) fail(`fetchTopicOffsets: ${offs.length} partitions, expected ${PARTITIONS}`)
    for (const o of offs) {
      if (String(o.low) !== '0') fail(`partition ${o.partition}: earliest offset ${o.low}, expected 0`)
      if (String(o.high) !== String(expected[o.partition])) {
        fail(`partition ${o.partition}: latest offset ${o.high}, expected ${expected[o.partition]}`)
      }
    }
    log(`fetchTopicOffsets ok: earliest 0, latest [${expected.join(', ')}]`)

    // Read every partition from explicit offset 0 with Fetch requests sent by kafkajs' broker
    // layer (no consumer group).
    const t0 = Date.now()
    await cluster.addTargetTopic(topic)
    await cluster.refreshMetadata()
    const next = expected.map(() => 0)
    let verified = 0
    let idleRounds = 0
    while (next.some((n, p) => n < expected[p])) {
      const pending = [...Array(PARTITIONS).keys()].filter(p => next[p] < expected[p])
      const byLeader = cluster.findLeaderForPartitions(topic, pending)
      let progressed = false
      for (const nodeId of Object.keys(byLeader)) {
        const broker = await cluster.findBroker({ nodeId })
        const resp = await broker.fetch({
          replicaId: -1,
          isolationLevel: 1,
          maxWaitTime: 500,
          minBytes: 1,
          maxBytes: 16 * 1024 * 1024,
          topics: [
            {
              topic,
              partitions: byLeader[nodeId].map(p => ({ partition: p, fetchOffset: String(next[p]), maxBytes: 4 * 1024 * 1024 })),
            },
          ],
        })
        for (const t of resp.responses) {
          if (t.topicName !== topic) fail(`fetch: unexpected topic ${t.topicName}`)
          for (const part of t.partitions) {
            const p = part.partition
            if (part.errorCode !== 0) fail(`fetch partition ${p} offset ${next[p]}: error code ${part.errorCode}`)
            if (String(part.highWatermark) !== String(expected[p])) {
              fail(`fetch partition ${p}: high watermark ${part.highWatermark}, expected ${expected[p]}`)
            }
            for (const m of part.messages) {
              const off = Number(m.offset)
              // A fetch may start mid-batch: records before the fetch offset are skipped,
              // exactly as kafkajs' consumer does.
              if (off < next[p]) continue
              if (off !== next[p]) fail(`partition ${p}: got offset ${off}, expected ${next[p]} (offsets must be gapless from 0)`)
              checkRecord(m, p, off, records)
              next[p]++
              verified++
              progressed = true
            }
          }
        }
      }
      if (progressed) idleRounds = 0
      else if (++idleRounds > 20) fail(`fetch made no progress; positions [${next}], expected end offsets [${expected}]`)
    }
    log(`verified ${verified} records (offsets, keys, values, headers, timestamps) in ${((Date.now() - t0) / 1000).toFixed(2)}s`)
    if (verified !== records) fail(`verified ${verified} records, expected ${records}`)

    // ListOffsets by timestamp.
    const queries = [] // [partition, timestamp, expected offset or null (none), description]
    for (const i of [...new Set([0, records - 1, Math.floor(records / 2)])].sort((a, b) => a - b)) {
      queries.push([i % PARTITIONS, BASE_TS + i, Math.floor(i / PARTITIONS), `exact timestamp of record ${i}`])
    }
    for (let p = 0; p < PARTITIONS; p++) {
      const n = expected[p]
      if (n === 0) continue
      const k = Math.floor(n / 2)
      const i = PARTITIONS * k + p
      queries.push([p, BASE_TS + i + 1, k + 1 < n ? k + 1 : null, `timestamp between record ${i} and ${i + PARTITIONS}`])
      queries.push([p, BASE_TS + records + 1000, null, 'timestamp after the last record'])
    }
    for (const [p, ts, want, desc] of queries) {
      // Raw answer (ListOffsets as kafkajs sends it): -1 when no record has timestamp >= ts.
      const raw = await cluster.fetchTopicsOffset([{ topic, fromTimestamp: ts, partitions: [{ partition: p }] }])
      const rawOff = raw[0].partitions.find(x => x.partition === p).offset
      const rawWant = want === null ? -1 : want
      if (String(rawOff) !== String(rawWant)) fail(`ListOffsets partition ${p} timestamp ${ts} (${desc}): offset ${rawOff}, expected ${rawWant}`)
      // Public API: admin.fetchTopicOffsetsByTimestamp maps "none" (-1) to the latest offset.
      const pub = await admin.fetchTopicOffsetsByTimestamp(topic, ts)
      const pubOff = pub.find(x => x.partition === p).offset
      const pubWant = want === null ? expected[p] : want
      if (String(pubOff) !== String(pubWant)) {
        fail(`fetchTopicOffsetsByTimestamp partition ${p} timestamp ${ts} (${desc}): offset ${pubOff}, expected ${pubWant}`)
      }
    }
    log(`offsets by timestamp ok (${queries.length} queries, raw ListOffsets and fetchTopicOffsetsByTimestamp)`)
    return verified
  } finally {
    await cluster.disconnect()
    await admin.disconnect()
  }
}

// Client security from the COMPAT_* environment variables (tests/compat/README.md): kafkajs's
// `ssl` (tls.connect options: the CA, and for mutual TLS the client certificate and key, PEM)
// and `sasl` ({ mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512', username, password }).
function securityFromEnv() {
  const protocol = (process.env.COMPAT_SECURITY_PROTOCOL || 'PLAINTEXT').toUpperCase()
  const out = {}
  if (protocol === 'SSL' || protocol === 'SASL_SSL') {
    const fs = require('fs')
    const ssl = {}
    if (process.env.COMPAT_SSL_CA_LOCATION) ssl.ca = [fs.readFileSync(process.env.COMPAT_SSL_CA_LOCATION, 'utf8')]
    if (process.env.COMPAT_SSL_CERT_LOCATION) ssl.cert = fs.readFileSync(process.env.COMPAT_SSL_CERT_LOCATION, 'utf8')
    if (process.env.COMPAT_SSL_KEY_LOCATION) ssl.key = fs.readFileSync(process.env.COMPAT_SSL_KEY_LOCATION, 'utf8')
    out.ssl = ssl
  }
  if (protocol === 'SASL_PLAINTEXT' || protocol === 'SASL_SSL') {
    out.sasl = {
      mechanism: (process.env.COMPAT_SASL_MECHANISM || 'PLAIN').toLowerCase(),
      username: process.env.COMPAT_SASL_USERNAME || '',
      password: process.env.COMPAT_SASL_PASSWORD || '',
    }
  }
  return out
}

async function main() {
  const bootstrap = process.env.BOOTSTRAP || '127.0.0.1:9092'
  const topic = process.env.TOPIC
  const mode = process.env.MODE || 'full'
  const records = parseInt(process.env.RECORDS || '20000', 10)
  if (!topic) fail('TOPIC must be set')
  if (!['full', 'produce', 'verify', 'group', 'resubscribe'].includes(mode)) fail(`MODE must be full, produce, verify, group or resubscribe, not ${mode}`)
  if (!(records >= 1)) fail('RECORDS must be >= 1')

  const kafka = new Kafka({
    clientId: 'skiff-compat',
    brokers: bootstrap.split(','),
    logLevel: process.env.COMPAT_DEBUG ? logLevel.DEBUG : logLevel.WARN,
    connectionTimeout: 5000,
    requestTimeout: 30000,
    ...securityFromEnv(),
  })
  log(`kafkajs ${kafkajsVersion} (codecs: none, gzip built in; snappy via kafkajs-snappy, lz4 via kafkajs-lz4, zstd via zstd-napi)`)
  log(`bootstrap=${bootstrap} topic=${topic} mode=${mode} records=${records}`)
  const t0 = Date.now()
  if (mode === 'group') {
    const consumed = await require('./group.js').runGroup(kafka, topic, records, log)
    log(`group scenario ${((Date.now() - t0) / 1000).toFixed(2)}s`)
    process.stdout.write(`compat ${CLIENT} ok produced=${records} verified=${consumed}\n`)
    clearTimeout(watchdog)
    process.exit(0)
  }
  if (mode === 'resubscribe') {
    const consumed = await require('./resubscribe.js').runResubscribe(kafka, topic, records, log)
    log(`resubscribe scenario ${((Date.now() - t0) / 1000).toFixed(2)}s`)
    process.stdout.write(`compat ${CLIENT} ok produced=${records * 4} verified=${consumed}\n`)
    clearTimeout(watchdog)
    process.exit(0)
  }
  let produced = 0
  if (mode === 'full' || mode === 'produce') {
    await createTopic(kafka, topic)
    produced = await produce(kafka, topic, records)
    log(`produce phase ${((Date.now() - t0) / 1000).toFixed(2)}s`)
  }
  const t1 = Date.now()
  const verified = await verify(kafka, topic, records)
  log(`verify phase ${((Date.now() - t1) / 1000).toFixed(2)}s; total ${((Date.now() - t0) / 1000).toFixed(2)}s`)
  process.stdout.write(`compat ${CLIENT} ok produced=${produced} verified=${verified}\n`)
  clearTimeout(watchdog)
  process.exit(0)
}

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
main().catch(e => {
  process.stderr.write(`[${CLIENT}] FAIL: ${e instanceof Mismatch ? e.message : e.stack || e}\n`)
  process.exit(1)
})
