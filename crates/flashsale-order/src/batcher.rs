//! Group commit: many requests' writes in one transaction.
//!
//! On sale day tens of thousands of orders arrive within seconds. Committing each on its own
//! makes PostgreSQL flush its log once per order; batching them makes it flush once per batch,
//! while every request still waits for the commit that made its own row durable. Under light load
//! a batch is one job and costs no extra latency: a worker takes what is queued, never waits for
//! more.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::OrderError;

struct Pending<J, R> {
    job: J,
    reply: oneshot::Sender<Result<R, OrderError>>,
}

/// Runs submitted jobs in batches of up to `max_batch`, on `workers` tasks (so one batch can
/// commit while the next one fills).
pub(crate) struct Batcher<J, R> {
    queue: mpsc::Sender<Pending<J, R>>,
}

impl<J, R> std::fmt::Debug for Batcher<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("queued", &(self.queue.max_capacity() - self.queue.capacity())).finish()
    }
}

impl<J: Send + 'static, R: Send + 'static> Batcher<J, R> {
    /// Starts the workers (on the current tokio runtime). `run` gets a batch and must return one
    /// result per job, in order. The workers stop when the batcher is dropped.
    pub(crate) fn spawn<F, Fut>(name: &'static str, workers: usize, max_batch: usize, run: F) -> Batcher<J, R>
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, OrderError>>> + Send + 'static,
    {
        let (queue, receiver) = mpsc::channel::<Pending<J, R>>(max_batch.max(1) * workers.max(1) * 8);
        let receiver = Arc::new(Mutex::new(receiver));
        let run = Arc::new(run);
        for _ in 0..workers.max(1) {
            let receiver = receiver.clone();
            let run = run.clone();
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::new();
                    {
                        let mut receiver = receiver.lock().await;
                        let Some(first) = receiver.recv().await else { return };
                        batch.push(first);
                        while batch.len() < max_batch {
                            match receiver.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                    }
                    metrics::histogram!("order_batch_size", "writer" => name).record(batch.len() as f64);
                    let (jobs, replies): (Vec<J>, Vec<_>) = batch.into_iter().map(|p| (p.job, p.reply)).unzip();
                    let results = run(jobs).await;
                    debug_assert_eq!(results.len(), replies.len());
                    for (reply, result) in replies.into_iter().zip(results) {
                        // The request may have gone (client hung up); its write still happened.
                        let _ = reply.send(result);
                    }
                }
            });
        }
        Batcher { queue }
    }

    /// Submits a job and waits for its batch to commit.
    pub(crate) async fn submit(&self, job: J) -> Result<R, OrderError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { job, reply }).await.map_err(|_| OrderError::WriterStopped)?;
        answer.await.map_err(|_| OrderError::WriterStopped)?
    }
}
