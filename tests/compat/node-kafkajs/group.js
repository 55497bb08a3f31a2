'use strict'
// MODE=group (tests/compat/README.md, "Group scenario"): three group members (kafkajs consumers
// in this process) on a 12-partition topic consume RECORDS records exactly once in aggregate
// with commits after every batch, while a fourth member joins after the first third and the
// first member leaves after the second.

const PARTITIONS = 12
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function runGroup (kafka, topic, records, log) {
  const group = `${topic}-group`
  const seen = new Set()
  let duplicates = 0
  let failure = null

  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }], waitForLeaders: true })
  log(`created topic ${topic} with ${PARTITIONS} partitions`)
  const producer = kafka.producer()
  await producer.connect()

  async function startMember (id) {
    const m = { id, assigned: [], consumer: kafka.consumer({ groupId: group, sessionTimeout: 30000 }) }
    const c = m.consumer
    c.on(c.events.GROUP_JOIN, e => { m.assigned = (e.payload.memberAssignment[topic] || []).slice() })
    c.on(c.events.REBALANCING, () => { m.assigned = [] })
    c.on(c.events.CRASH, e => { failure = failure || new Error(`member ${id} crashed: ${e.payload.error}`) })
    await c.connect()
    await c.subscribe({ topic, fromBeginning: true })
    await c.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        if (batch.messages.length === 0) return
        for (const msg of batch.messages) {
          const i = parseInt(msg.value.toString(), 10)
          if (batch.partition !== i % PARTITIONS) throw new Error(`record ${i} read from partition ${batch.partition}`)
          if (seen.has(i)) duplicates++
          else seen.add(i)
        }
        // Committed before the next batch (and before any rebalance hands the partition on).
        const next = (BigInt(batch.lastOffset()) + 1n).toString()
        await c.commitOffsets([{ topic, partition: batch.partition, offset: next }])
      },
    })
    return m
  }

  async function wait (what, cond, timeoutMs = 60000) {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      if (failure) throw failure
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (seen ${seen.size})`)
      await sleep(20)
    }
  }

  const coversAll = ms => ms.every(m => m.assigned.length > 0) && ms.reduce((n, m) => n + m.assigned.length, 0) === PARTITIONS

  async function produce (lo, hi) {
    for (let start = lo; start < hi; start += 5000) {
      const messages = []
      for (let i = start; i < Math.min(hi, start + 5000); i++) {
        messages.push({ key: `g-${i}`, value: String(i), partition: i % PARTITIONS })
      }
      await producer.send({ topic, acks: -1, messages })
    }
    log(`produced records ${lo}..${hi}`)
  }

  const third = Math.floor(records / 3)
  const t0 = Date.now()
  const members = await Promise.all([0, 1, 2].map(startMember))
  await wait('3 members to share the partitions', () => coversAll(members))
  log(`3 members joined in ${Date.now() - t0} ms`)
  await produce(0, third)
  await wait('first third', () => seen.size >= third)

  const t1 = Date.now()
  members.push(await startMember(3))
  await produce(third, 2 * third)
  await wait('4 members to share the partitions', () => coversAll(members))
  log(`rebalance 3->4 members took ${Date.now() - t1} ms`)
  await wait('second third', () => seen.size >= 2 * third)

  const first = members.shift()
  const t2 = Date.now()
  await first.consumer.disconnect()
  await produce(2 * third, records)
  await wait('3 members to share the partitions again', () => coversAll(members))
  log(`rebalance 4->3 members took ${Date.now() - t2} ms`)
  await wait('all records', () => seen.size >= records, 120000)
  await sleep(1000) // any duplicate would arrive now
  await Promise.all(members.map(m => m.consumer.disconnect()))
  await producer.disconnect()
  if (failure) throw failure
  if (duplicates !== 0 || seen.size !== records) {
    throw new Error(`consumed ${seen.size} distinct records with ${duplicates} duplicates, want ${records} exactly once`)
  }
  // Committed offsets (OffsetFetch) must be each partition's end.
  const [fetched] = await admin.fetchOffsets({ groupId: group, topics: [topic] })
  let total = 0
  for (let p = 0; p < PARTITIONS; p++) {
    const o = fetched.partitions.find(x => x.partition === p)
    const want = Math.floor((records - p + PARTITIONS - 1) / PARTITIONS)
    if (!o || parseInt(o.offset, 10) !== want) throw new Error(`partition ${p} committed ${o && o.offset}, want ${want}`)
    total += want
  }
  const described = await admin.describeGroups([group])
  log(`committed offsets cover ${total} records; group state ${described.groups[0].state}`)
  await admin.disconnect()
  return seen.size
}

module.exports = { runGroup }
