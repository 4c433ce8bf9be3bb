//! Headless Chromium driven over WebDriver: Debian's `chromedriver` started on a free
//! port, a fantoccini session with a throw-away profile, and the dashboard read back
//! as a user sees it (the text of the elements marked with `data-testid`).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use shoal_testkit::ports::free_port;
use shoal_testkit::{ServiceProcess, try_wait_for};

/// What the page shows, read in one round trip by [`READ_PAGE`].
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    pub nodes: Vec<NodeRow>,
    pub assignments: Vec<AssignmentRow>,
    pub leader: String,
    pub term: String,
    pub strategy: String,
    pub live: String,
    /// The health indicator: `healthy`, or `unhealthy: <problems>`.
    pub health: String,
    pub errors: Vec<String>,
    pub events: Vec<String>,
    /// The open history panel's rows, `None` while it is closed.
    pub history: Option<Vec<HistoryRow>>,
    /// Points drawn in the throughput chart, `None` while it is hidden.
    pub throughput_points: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeRow {
    pub id: String,
    pub status: String,
    pub agents: String,
    pub button: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AssignmentRow {
    pub agent: String,
    pub node: String,
    pub status: String,
    pub waiting: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HistoryRow {
    pub action: String,
    pub text: String,
    /// The node ids of the "why this node" table, in its order.
    pub candidates: Vec<String>,
}

impl Page {
    pub fn node(&self, id: &str) -> Option<&NodeRow> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Reads the dashboard through its `data-testid` marks: the text a user reads.
const READ_PAGE: &str = r#"
const q = (root, id) => root.querySelector(`[data-testid="${id}"]`);
const all = (root, id) => [...root.querySelectorAll(`[data-testid="${id}"]`)];
const text = (el) => (el ? el.textContent.trim() : '');
const shown = (el) => Boolean(el) && el.checkVisibility();
const history = q(document, 'history');
const chart = q(document, 'chart-throughput');
return {
  nodes: all(document, 'node-row').map((r) => ({
    id: r.dataset.nodeId,
    status: text(q(r, 'node-status')),
    agents: text(q(r, 'node-agents')),
    button: text(q(r, 'drain-button')),
  })),
  assignments: all(document, 'assignment-row').map((r) => ({
    agent: r.dataset.agent,
    node: text(q(r, 'assignment-node')),
    status: r.dataset.status,
    waiting: r.classList.contains('waiting'),
  })),
  leader: text(q(document, 'leader')),
  term: text(q(document, 'term')),
  strategy: q(document, 'strategy').value,
  live: text(q(document, 'live')),
  health: text(q(document, 'health')),
  errors: all(document, 'error').map((e) => text(e.querySelector('span'))),
  events: all(document, 'event').map(text),
  history: shown(history)
    ? all(history, 'history-row').map((r) => ({
        action: r.dataset.action,
        text: text(r),
        candidates: all(r, 'candidate').map((c) => c.dataset.nodeId),
      }))
    : null,
  throughput_points: shown(chart) ? Number(chart.dataset.points || 0) : null,
};
"#;

/// A program on PATH (or at `$var`), or an error saying how to install it.
fn program(var: &str, name: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{name} is not on PATH (nor set in ${var}): run scripts/deps.sh, which installs \
                 Debian's chromium and chromium-driver"
            )
        })
}

/// A browser session on a chromedriver of its own; both end on drop.
pub struct Browser {
    pub client: Client,
    _driver: ServiceProcess,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Result<Browser> {
        let driver_bin = program("SHOAL_CHROMEDRIVER", "chromedriver")?;
        let chromium = program("SHOAL_CHROMIUM", "chromium")?;
        let port = free_port();
        let driver = ServiceProcess::spawn(
            "chromedriver",
            &driver_bin,
            &[format!("--port={port}")],
            &[],
        )?;
        driver
            .wait_for_log("started successfully", Duration::from_secs(30))
            .await?;
        let profile = tempfile::Builder::new()
            .prefix("shoal-chromium-")
            .tempdir()?;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    // CI runs as root, where Chromium's sandbox cannot start.
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                    "--window-size=1400,1200",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .with_context(|| format!("starting a Chromium session ({})", chromium.display()))?;
        Ok(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    pub async fn page(&self) -> Result<Page> {
        let value = self.client.execute(READ_PAGE, Vec::new()).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Reads the page until `check` accepts it; on timeout the error shows the page
    /// as last read.
    pub async fn wait<T>(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Page) -> Option<T>,
    ) -> Result<T> {
        let last = RefCell::new(None);
        let result = try_wait_for(what, deadline, || async {
            let page = self.page().await?;
            let found = check(&page);
            *last.borrow_mut() = Some(page);
            Ok(found)
        })
        .await;
        result.map_err(|e| anyhow!("{e:#}\nthe page showed: {:#?}", last.borrow()))
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) -> Result<()> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("finding {css}"))?
            .click()
            .await
            .with_context(|| format!("clicking {css}"))
    }

    /// Saves a PNG of the window at `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self.client.screenshot().await?;
        if !png.starts_with(b"\x89PNG") {
            bail!("the screenshot is not a PNG");
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Ends the session (Chromium exits).
    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// `target/test-artefacts/<name>`, next to the build's own output.
pub fn artefact(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .context("the test binary is not under target/<profile>/deps")?;
    Ok(target.join("test-artefacts").join(name))
}
