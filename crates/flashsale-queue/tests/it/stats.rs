//! Queue counters against a real Redis.

use flashsale_core::{BatchNo, SaleId};
use flashsale_queue::{Queue, QueueStats};
use flashsale_testkit::TestRedis;

#[tokio::test]
async fn counters_read_as_zero_before_anyone_joins_and_out_of_range_ones_read_clamped() {
    let redis = TestRedis::new();
    let queue = Queue::new(redis.handle().await, redis.keys.clone());
    let (a, b) = (SaleId::try_from(1).unwrap(), SaleId::try_from(2).unwrap());
    let keys = redis.keys.batch(b, BatchNo::FIRST);
    let mut conn = redis.handle().await.conn().await.unwrap();
    let _: () = redis::cmd("MSET")
        .arg(keys.queue_tail())
        .arg(5)
        .arg(keys.queue_serving())
        .arg(9)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stats = queue.stats(&[(a, BatchNo::FIRST), (b, BatchNo::FIRST)]).await.unwrap();
    assert_eq!(stats, [QueueStats::default(), QueueStats { queued: 5, admitted: 5, ..QueueStats::default() }]);
    // A counter out of range (a bug, a partial restore) reads clamped: it never fails the reads
    // of the other batches read with it.
    let _: () = redis::cmd("SET").arg(keys.queue_tail()).arg(-1).query_async(&mut conn).await.unwrap();
    let _: () =
        redis::cmd("HSET").arg(keys.queue_ticker()).arg("inflight").arg(-3).query_async(&mut conn).await.unwrap();
    let stats = queue.stats(&[(a, BatchNo::FIRST), (b, BatchNo::FIRST)]).await.unwrap();
    assert_eq!(stats, [QueueStats::default(), QueueStats::default()]);
    let counters = queue.counters(&[(b, BatchNo::FIRST)]).await.unwrap();
    assert_eq!((counters[0].tail, counters[0].serving, counters[0].inflight), (0, 9, 0));
}
