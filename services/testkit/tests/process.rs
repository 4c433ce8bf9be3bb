//! Service processes: signals, exits, logs, respawn, and logs shown on panic.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use shoal_testkit::ServiceProcess;

const DEADLINE: Duration = Duration::from_secs(5);

fn shell(name: &str, script: &str) -> Result<ServiceProcess> {
    ServiceProcess::spawn(
        name,
        "/bin/sh".as_ref(),
        &["-c".to_string(), script.to_string()],
        &[],
    )
}

/// Ready only once the trap is set: a SIGTERM right after "ready" must find it.
const TRAPPING: &str =
    "trap \"echo got-term; exit 0\" TERM; echo ready; while true; do sleep 0.05; done";

#[tokio::test]
async fn service_process_signals() -> Result<()> {
    let mut svc = shell("trapper", TRAPPING)?;
    svc.wait_for_log("ready", DEADLINE).await?;
    assert!(svc.is_running());
    assert!(svc.pid() > 0);

    svc.pause()?;
    assert!(
        svc.wait_exit(Duration::from_millis(100)).await.is_err(),
        "a paused process has not exited"
    );
    svc.resume()?;

    svc.terminate()?;
    let status = svc.wait_exit(DEADLINE).await?;
    assert!(status.success(), "{status}");
    assert!(svc.log().contains("got-term"));
    assert!(!svc.is_running());
    assert!(svc.terminate().is_err(), "no signals to an exited process");

    let mut victim = shell("victim", TRAPPING)?;
    victim.wait_for_log("ready", DEADLINE).await?;
    victim.kill()?;
    assert!(!victim.is_running());
    let status = victim.wait_exit(DEADLINE).await?;
    assert!(!status.success(), "SIGKILL is not a clean exit: {status}");
    assert!(
        !victim.log().contains("got-term"),
        "SIGKILL can't be trapped"
    );
    Ok(())
}

#[tokio::test]
async fn environment_is_inherited_with_overrides_and_respawn_appends() -> Result<()> {
    let envs = [("SHOAL_TESTKIT_GREETING".to_string(), "hello".to_string())];
    let script = "echo \"greeting=$SHOAL_TESTKIT_GREETING home=$HOME\"; exec sleep 30".to_string();
    let mut svc =
        ServiceProcess::spawn("greeter", "/bin/sh".as_ref(), &["-c".into(), script], &envs)?;
    svc.wait_for_log("greeting=hello home=/", DEADLINE).await?;
    let first_pid = svc.pid();

    svc.kill()?;
    let offset = svc.log_len();
    svc.respawn()?;
    assert_ne!(svc.pid(), first_pid);
    svc.wait_for_log_since(offset, "greeting=hello", DEADLINE)
        .await?;
    assert_eq!(
        svc.log().matches("greeting=hello").count(),
        2,
        "one log across runs:\n{}",
        svc.log()
    );
    assert!(svc.respawn().is_err(), "already running");

    svc.interrupt()?;
    assert!(!svc.wait_exit(DEADLINE).await?.success());
    Ok(())
}

#[tokio::test]
async fn waiting_for_log_fails_fast_when_the_process_exits() -> Result<()> {
    let svc = shell("quitter", "echo bye; exit 3")?;
    let started = std::time::Instant::now();
    let err = svc
        .wait_for_log("never printed", Duration::from_secs(20))
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.contains("quitter exited before writing"), "{err}");
    assert!(err.contains("bye"), "error shows the log: {err}");
    Ok(())
}

/// Runs itself again so the child test can panic and we can read what it printed.
#[tokio::test]
async fn a_panicking_test_shows_its_process_logs() -> Result<()> {
    if std::env::var_os("SHOAL_TESTKIT_CHILD").is_some_and(|v| v == "panic-logs") {
        let svc = shell("chatty", "echo line-from-chatty; exec sleep 30")?;
        svc.wait_for_log("line-from-chatty", DEADLINE).await?;
        panic!("deliberate panic");
    }
    let output = Command::new(std::env::current_exe()?)
        .args([
            "a_panicking_test_shows_its_process_logs",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHOAL_TESTKIT_CHILD", "panic-logs")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "the child test panics:\n{text}");
    assert!(text.contains("deliberate panic"), "{text}");
    assert!(text.contains("lines of the log of chatty"), "{text}");
    assert!(text.contains("line-from-chatty"), "{text}");
    Ok(())
}
