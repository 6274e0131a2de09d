//! Queue counters against a real Redis.

use flashsale_core::{BatchNo, SaleId};
use flashsale_queue::{Queue, QueueError, QueueStats};
use flashsale_testkit::TestRedis;

#[tokio::test]
async fn counters_read_as_zero_before_anyone_joins_and_admitted_never_exceeds_queued() {
    let redis = TestRedis::new();
    let queue = Queue::new(redis.pool.clone(), redis.keys.clone());
    let (a, b) = (SaleId::try_from(1).unwrap(), SaleId::try_from(2).unwrap());
    let keys = redis.keys.batch(b, BatchNo::FIRST);
    let mut conn = redis.pool.get().await.unwrap();
    let _: () = redis::cmd("MSET")
        .arg(keys.queue_tail())
        .arg(5)
        .arg(keys.queue_serving())
        .arg(9)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stats = queue.stats(&[(a, BatchNo::FIRST), (b, BatchNo::FIRST)]).await.unwrap();
    assert_eq!(stats, [QueueStats::default(), QueueStats { queued: 5, admitted: 5 }]);
    let _: () = redis::cmd("SET").arg(keys.queue_tail()).arg(-1).query_async(&mut conn).await.unwrap();
    assert!(matches!(queue.stats(&[(b, BatchNo::FIRST)]).await, Err(QueueError::CorruptCounter { .. })));
    redis.cleanup().await;
}
