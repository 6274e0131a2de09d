//! Rank statistics for the fairness figures: whether the pre-queue's drawn order follows arrival
//! (it must not), as the server's sale report, the load harness and the tests each measure it.

/// Ranks (0-based) of `values` in ascending order (ties in the order given).
pub fn ranks(values: &[u64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|i| values[*i]);
    let mut ranks = vec![0.0; values.len()];
    for (rank, i) in order.into_iter().enumerate() {
        ranks[i] = rank as f64;
    }
    ranks
}

/// Spearman's rank correlation of two equally long lists of distinct ranks (1: same order, -1:
/// reversed, near 0: unrelated).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_order_is_one_and_reversed_is_minus_one() {
        assert_eq!(ranks(&[30, 10, 20]), [2.0, 0.0, 1.0]);
        let up = ranks(&[1, 2, 3, 4]);
        assert_eq!(spearman(&up, &up), 1.0);
        assert_eq!(spearman(&up, &ranks(&[4, 3, 2, 1])), -1.0);
    }
}
