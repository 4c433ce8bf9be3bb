//! Message sizes against the server's `max_payload` (read from the connection's
//! server info, 1 MiB by default): lists page by encoded size, batches split by it,
//! and nothing Shoal sends is larger than the server would carry.

use std::io;

use serde::Serialize;

/// Room kept free under `max_payload` for what wraps the measured items: field
/// names, counts, a `next` cursor, headers.
pub const RESERVE: usize = 4 * 1024;

/// The bytes measured items may take in one message to a server with `max_payload`.
pub fn budget(max_payload: usize) -> usize {
    max_payload.saturating_sub(RESERVE)
}

/// Counts what is written to it.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The length of `value`'s JSON, without keeping the bytes.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        // A value that cannot be encoded takes no room: encoding it later fails
        // with its own error.
        Err(_) => 0,
    }
}

/// How many of `items`, from the first, fit in `budget` bytes as the elements of a
/// JSON array (with their commas).
pub fn fitting<'a, T: Serialize + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    budget: usize,
) -> usize {
    let mut used = 0;
    let mut count = 0;
    for item in items {
        used += encoded_len(item) + 1;
        if used > budget {
            break;
        }
        count += 1;
    }
    count
}

/// Cuts a page of a list (`page`, with `next` set if more follow it) down to what
/// fits in `budget` bytes, moving `next` back to the last item kept. Fails only
/// when not even the first item fits.
pub fn fit_page<T: Serialize>(
    page: &mut Vec<T>,
    next: &mut Option<String>,
    budget: usize,
    key: impl Fn(&T) -> String,
) -> Result<(), crate::ShoalError> {
    let fit = fitting(page.iter(), budget);
    if fit == page.len() {
        return Ok(());
    }
    if fit == 0 {
        return Err(crate::reply::too_large(encoded_len(&page[0])));
    }
    page.truncate(fit);
    *next = page.last().map(key);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_the_encoding_and_lists_stop_at_the_budget() {
        let names: Vec<String> = (0..100).map(|i| format!("agent-{i:03}")).collect();
        assert_eq!(
            encoded_len(&names[0]),
            serde_json::to_vec(&names[0]).unwrap().len()
        );
        let n = fitting(&names, 100);
        let json = serde_json::to_vec(&names[..n]).unwrap();
        assert!(json.len() <= 100 + 1, "{}", json.len());
        assert!(serde_json::to_vec(&names[..n + 1]).unwrap().len() > 100);
        assert_eq!(fitting(&names, usize::MAX), 100);
        assert_eq!(fitting(&names, 3), 0);
        assert_eq!(budget(1024 * 1024), 1024 * 1024 - RESERVE);
        assert_eq!(budget(10), 0);
    }

    #[test]
    fn a_page_too_big_is_cut_with_a_cursor_at_its_last_item() {
        let names: Vec<String> = (0..100).map(|i| format!("agent-{i:03}")).collect();
        let (mut page, mut next) = (names.clone(), None);
        fit_page(&mut page, &mut next, 120, String::clone).unwrap();
        assert!(page.len() < 100 && !page.is_empty());
        assert_eq!(next.as_deref(), Some(page.last().unwrap().as_str()));
        // A page that fits is left alone, its cursor too.
        let (mut page, mut next) = (names[..3].to_vec(), Some("agent-002".to_string()));
        fit_page(&mut page, &mut next, 1000, String::clone).unwrap();
        assert_eq!((page.len(), next.as_deref()), (3, Some("agent-002")));
        let e = fit_page(&mut names.clone(), &mut None, 5, String::clone).unwrap_err();
        assert!(e.message.contains("max payload"), "{}", e.message);
    }
}
