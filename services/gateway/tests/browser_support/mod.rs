//! What the dashboard's browser test stands on: a real Shoal stack and a real browser.

pub mod browser;
pub mod stack;
