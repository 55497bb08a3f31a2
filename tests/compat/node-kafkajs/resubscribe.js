'use strict'
// MODE=resubscribe (tests/compat/README.md, "Resubscribe scenario"): one classic group consumer
// changes its subscription, sees a subscribed topic grow and sees one deleted and re-created;
// each rebalance must finish within PHASE_LIMIT_MS (a coordinator that waits for the rebalance
// timeout instead of the last rejoin takes minutes).
//
// kafkajs cannot change a running consumer's subscription ("Cannot subscribe to topic while
// consumer is running") and never drops a topic from it, so: the subscription change is
// stop() (which leaves the group), subscribe(), run() (a new member id); the deletion phase
// replaces the consumer by a new one subscribed to the remaining topic. Partition growth is
// kafkajs' own doing: its stale-assignment check rejoins with the same member id.

const PARTITIONS = 3
const GROWN = 6
const PHASE_LIMIT_MS = 10000
const WAIT_MS = 30000
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function runResubscribe (kafka, topic, records, log) {
  const a = `${topic}-a`
  const b = `${topic}-b`
  const groupId = `${topic}-resub`
  const seen = new Set()
  let assigned = null // topic -> partitions of the last join, null while rebalancing
  let failure = null

  const admin = kafka.admin()
  await admin.connect()
  const create = t => admin.createTopics({ topics: [{ topic: t, numPartitions: PARTITIONS, replicationFactor: 1 }], waitForLeaders: true })
  await create(a)
  await create(b)
  log(`created ${a} and ${b} with ${PARTITIONS} partitions`)

  function newConsumer () {
    const c = kafka.consumer({
      groupId,
      // A deleted topic must stay deleted until the scenario re-creates it.
      allowAutoTopicCreation: false,
      // New partitions are noticed on a metadata refresh: every second instead of 5 minutes.
      metadataMaxAge: 1000,
      // Idle fetches return after 500 ms (as librdkafka and Java) instead of kafkajs' 5 s, so
      // the phases time the rebalance rather than an idle fetch.
      maxWaitTimeInMs: 500,
    })
    c.on(c.events.GROUP_JOIN, e => { assigned = e.payload.memberAssignment })
    c.on(c.events.REBALANCING, () => { assigned = null })
    c.on(c.events.CRASH, e => { failure = failure || new Error(`consumer crashed: ${e.payload.error}`) })
    return c
  }
  // No commits (as every client in this scenario): each rebalance starts from the earliest
  // offset, and a re-created topic never meets offsets committed for its earlier incarnation.
  const run = c => c.run({ autoCommit: false, eachMessage: async ({ message }) => { seen.add(message.value.toString()) } })

  async function wait (what, cond) {
    const deadline = Date.now() + WAIT_MS
    while (!cond()) {
      if (failure) throw failure
      if (Date.now() > deadline) throw new Error(`${what}: not done after ${WAIT_MS / 1000} s`)
      await sleep(20)
    }
  }

  // A new producer each time, so its first metadata already knows new partitions and topics.
  async function produce (t, prefix, partitions) {
    const producer = kafka.producer()
    await producer.connect()
    const values = []
    for (let i = 0; i < records; i++) values.push(`${prefix}-${i}`)
    await producer.send({ topic: t, acks: -1, messages: values.map((v, i) => ({ value: v, partition: partitions[i % partitions.length] })) })
    await producer.disconnect()
    return values
  }

  async function phase (name, start, values) {
    await wait(`${name}: records`, () => values.every(v => seen.has(v)))
    const took = Date.now() - start
    log(`${name} took ${took} ms`)
    return took
  }

  const took = {}
  let t = Date.now()
  let consumer = newConsumer()
  await consumer.connect()
  await consumer.subscribe({ topics: [a], fromBeginning: true })
  await run(consumer)
  await phase('first join', t, await produce(a, 'a', [0, 1, 2]))

  // (a) The subscription grows by one topic: stop (leaves the group), subscribe, run.
  t = Date.now()
  await consumer.stop()
  await consumer.subscribe({ topics: [b], fromBeginning: true })
  await run(consumer)
  took['subscription change'] = await phase('subscription change', t, await produce(b, 'b', [0, 1, 2]))

  // (b) The subscribed topic grows; kafkajs notices on its metadata refresh and rejoins.
  t = Date.now()
  await admin.createPartitions({ topicPartitions: [{ topic: a, count: GROWN }] })
  took['partition growth'] = await phase('partition growth', t, await produce(a, 'p', [3, 4, 5]))

  // (c) A subscribed topic is deleted: a new consumer takes over with the remaining topic;
  // then the topic is created again and subscribed to again.
  t = Date.now()
  await consumer.disconnect()
  assigned = null
  await admin.deleteTopics({ topics: [b] })
  consumer = newConsumer()
  await consumer.connect()
  await consumer.subscribe({ topics: [a], fromBeginning: true })
  await run(consumer)
  await wait('topic deletion', () => assigned && (assigned[a] || []).length === GROWN && !assigned[b])
  took['topic deletion'] = Date.now() - t
  log(`topic deletion took ${took['topic deletion']} ms`)
  t = Date.now()
  await create(b)
  await consumer.stop()
  await consumer.subscribe({ topics: [b], fromBeginning: true })
  await run(consumer)
  took['topic re-creation'] = await phase('topic re-creation', t, await produce(b, 'r', [0, 1, 2]))

  await consumer.disconnect()
  await admin.disconnect()
  if (failure) throw failure
  const slow = Object.entries(took).filter(([, ms]) => ms > PHASE_LIMIT_MS)
  if (slow.length) throw new Error(`rebalances slower than ${PHASE_LIMIT_MS} ms: ${JSON.stringify(Object.fromEntries(slow))}`)
  return seen.size
}

module.exports = { runResubscribe }
