//! How the API's lists page.
//!
//! Two lists page, each in the way that suits its readers: a buyer's orders (`GET /orders`)
//! newest first, continued from the previous page's `next_before` (keyset paging: a page never
//! repeats or skips an order while new ones arrive), and the admin sale list
//! (`GET /admin/sales`) by `limit` and `offset` (operators browse a few hundred sales). Both
//! read `limit` as one [`PageSize`] within the list's [`PageBounds`].

use super::ApiError;

/// A list's page sizes: the default and the largest allowed.
#[derive(Debug, Clone, Copy)]
pub struct PageBounds {
    pub default: u16,
    pub max: u16,
}

/// How many items one page holds: 1 to the list's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u16);

impl PageSize {
    /// The `limit` a request asked for (`None`: the default), or `bad_request`.
    pub fn read(requested: Option<i64>, bounds: PageBounds) -> Result<PageSize, ApiError> {
        match requested {
            None => Ok(PageSize(bounds.default)),
            Some(n) => u16::try_from(n)
                .ok()
                .filter(|n| (1..=bounds.max).contains(n))
                .map(PageSize)
                .ok_or_else(|| ApiError::BadRequest(format!("limit must be from 1 to {}", bounds.max))),
        }
    }

    /// The size, as the queries take it.
    pub fn get(self) -> i64 {
        i64::from(self.0)
    }

    /// Whether `count` items fill the page, so that another page may follow.
    pub fn is_filled_by(self, count: usize) -> bool {
        count >= usize::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: PageBounds = PageBounds { default: 20, max: 100 };

    #[test]
    fn a_page_size_is_one_to_the_lists_maximum() {
        assert_eq!(PageSize::read(None, BOUNDS).unwrap().get(), 20);
        assert_eq!(PageSize::read(Some(100), BOUNDS).unwrap().get(), 100);
        for refused in [0, -1, 101, i64::MAX] {
            assert!(matches!(PageSize::read(Some(refused), BOUNDS), Err(ApiError::BadRequest(_))), "{refused}");
        }
        let size = PageSize::read(Some(2), BOUNDS).unwrap();
        assert!(size.is_filled_by(2) && !size.is_filled_by(1));
    }
}
