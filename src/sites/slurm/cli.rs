//! CLI driver: `sbatch`, `squeue`, `scancel`, `scontrol` and `sinfo` run as a configured user.
//!
//! Authentication is munge, i.e. whoever runs the command. With `run_as` set, every command
//! is wrapped in `runuser -u USER --` (drover running as root submitting as a CI user).
//! Job environment values travel in the `sbatch` process environment and `--export` names
//! them, so secrets never appear on a command line, in the script, the name or the comment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::types::fill_partition_gres;
use super::wire;
use super::{BoxFuture, Error, Job, JobSpec, Node, Partition, Result, SlurmDriver};

/// Column delimiter for `sinfo --Format`; the free-text reason is the last column.
const SEP: char = '|';

/// How to run the Slurm commands.
#[derive(Debug, Clone)]
pub struct CliConfig {
    /// Run every command as this user (via `runuser -u USER --`); `None` runs as ourselves.
    pub run_as: Option<String>,
    /// `SLURM_CONF` for the commands, when slurm.conf is not at the default path.
    pub slurm_conf: Option<PathBuf>,
    /// The directory of the Slurm tools; `None` finds them on `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// Timeout of each command.
    pub timeout: Duration,
}

impl Default for CliConfig {
    fn default() -> Self {
        Self {
            run_as: None,
            slurm_conf: None,
            bin_dir: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Kills a command's whole process group when dropped before the command ended (a timeout,
/// or the apply that ran it was cancelled).
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) has no memory effects. A negative pid signals the process
            // group created by `process_group(0)`; its id stays reserved while any member
            // (the tool `runuser` started) is alive, and ESRCH is harmless.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

/// A [`SlurmDriver`] that runs the Slurm command-line tools.
#[derive(Debug, Clone, Default)]
pub struct CliDriver {
    cfg: CliConfig,
}

impl CliDriver {
    /// Builds a driver; no command runs until the first call.
    pub fn new(cfg: CliConfig) -> Self {
        Self { cfg }
    }

    fn command(&self, program: &str, args: &[String]) -> Command {
        let program = match &self.cfg.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = match &self.cfg.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        // Its own process group, so that a timeout or a cancelled apply stops the tool
        // itself and not only `runuser` (which forks it and would leave it running).
        cmd.args(args)
            .process_group(0)
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(conf) = &self.cfg.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        cmd
    }

    /// Runs `program args`, with `env` added to its environment and `stdin` fed to it.
    async fn run(
        &self,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        stdin: Option<&str>,
    ) -> Result<String> {
        let shown = format!("{program} {}", args.join(" "));
        let mut cmd = self.command(program, args);
        cmd.envs(env).stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let fail = |status: String, stderr: String| Error::Command {
            command: shown.clone(),
            status,
            stderr,
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("could not start: {e}"), String::new()))?;
        let mut group = GroupKill(child.id());
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .map_err(|e| fail(format!("writing stdin: {e}"), String::new()))?;
        }
        let output = tokio::time::timeout(self.cfg.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                fail(
                    format!("timed out after {:?}", self.cfg.timeout),
                    String::new(),
                )
            })?
            .map_err(|e| fail(format!("wait failed: {e}"), String::new()))?;
        group.0 = None;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if !output.status.success() {
            return Err(fail(output.status.to_string(), stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn submit_job(&self, spec: &JobSpec, hold: bool) -> Result<u64> {
        let mut env = spec.environment.clone();
        if !env.contains_key("PATH") {
            env.insert(
                "PATH".to_owned(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned()),
            );
        }
        let mut args = sbatch_args(spec, &env);
        if hold {
            args.push("--hold".to_owned());
        }
        let out = self.run("sbatch", &args, &env, Some(&spec.script)).await?;
        let id = out.trim().split(';').next().unwrap_or("");
        id.parse().map_err(|_| {
            protocol(
                "sbatch --parsable",
                format!("expected a job id, got {:?}", out.trim()),
            )
        })
    }

    async fn json(&self, program: &str, args: &[&str]) -> Result<Vec<u8>> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let out = self
            .run(program, &args, &BTreeMap::new(), None)
            .await?
            .into_bytes();
        let errors = wire::errors_of(&out);
        if !errors.is_empty() {
            return Err(Error::Api {
                url: "cli".into(),
                endpoint: format!("{program} {}", args.join(" ")),
                errors,
            });
        }
        Ok(out)
    }

    async fn list_jobs(&self) -> Result<Vec<Job>> {
        // Finished jobs too (as slurmrestd lists them): 22.05 lists them anyway, 24.11 and
        // later only with `--states=all`.
        let out = self.json("squeue", &["--json", "--states=all"]).await?;
        wire::parse_jobs(&out).map_err(|e| protocol("squeue --json --states=all", e))
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        let format =
            format!("NodeHost:{SEP},StateComplete:{SEP},Gres:{SEP},Partition:{SEP},Reason:");
        let args = [
            "--noheader".to_owned(),
            "--Node".to_owned(),
            format!("--Format={format}"),
        ];
        let out = self.run("sinfo", &args, &BTreeMap::new(), None).await?;
        Ok(parse_sinfo_nodes(&out))
    }

    async fn list_partitions(&self) -> Result<Vec<Partition>> {
        let args = [
            "show".to_owned(),
            "partition".to_owned(),
            "--oneliner".to_owned(),
        ];
        let out = self.run("scontrol", &args, &BTreeMap::new(), None).await?;
        let mut parts = wire::parse_scontrol_partitions(&out);
        fill_partition_gres(&mut parts, &self.list_nodes().await?);
        Ok(parts)
    }

    async fn release_job(&self, id: u64) -> Result<()> {
        let args = ["release".to_owned(), id.to_string()];
        self.run("scontrol", &args, &BTreeMap::new(), None)
            .await
            .map(drop)
    }

    async fn cancel_job(&self, id: u64) -> Result<()> {
        self.run("scancel", &[id.to_string()], &BTreeMap::new(), None)
            .await
            .map(drop)
    }
}

fn protocol(endpoint: &str, detail: impl ToString) -> Error {
    Error::Protocol {
        url: "cli".into(),
        endpoint: endpoint.to_owned(),
        detail: detail.to_string(),
    }
}

/// `sbatch` arguments for `spec`; `env` is only used for the names in `--export`.
fn sbatch_args(spec: &JobSpec, env: &BTreeMap<String, String>) -> Vec<String> {
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    let mut args = vec![
        "--parsable".to_owned(),
        format!("--job-name={}", spec.name),
        format!("--comment={}", spec.comment),
        format!("--partition={}", spec.partition),
        format!("--cpus-per-task={}", spec.cpus_per_task),
        format!("--chdir={}", spec.working_directory),
        format!("--export={}", names.join(",")),
    ];
    let optional = [
        spec.account.as_ref().map(|a| format!("--account={a}")),
        spec.qos.as_ref().map(|q| format!("--qos={q}")),
        spec.gres.as_ref().map(|g| format!("--gres={g}")),
        spec.memory_mb.map(|m| format!("--mem={m}M")),
        spec.time_limit_minutes.map(|t| format!("--time={t}")),
        spec.constraint
            .as_ref()
            .map(|c| format!("--constraint={c}")),
    ];
    args.extend(optional.into_iter().flatten());
    args
}

/// Parses `sinfo --Node --Format` lines (one per node and partition) into one entry per node.
fn parse_sinfo_nodes(text: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.splitn(5, SEP).map(str::trim).collect();
        let [name, state, gres, partition, reason] = cols[..] else {
            continue;
        };
        let partition = partition.trim_end_matches('*').to_owned();
        if let Some(node) = nodes.iter_mut().find(|n| n.name == name) {
            node.partitions.push(partition);
            continue;
        }
        nodes.push(Node {
            name: name.to_owned(),
            state: state.to_ascii_uppercase(),
            reason: if reason == "none" {
                String::new()
            } else {
                reason.to_owned()
            },
            gres: if gres == "(null)" {
                String::new()
            } else {
                gres.to_owned()
            },
            partitions: vec![partition],
        });
    }
    nodes
}

impl SlurmDriver for CliDriver {
    fn submit<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.submit_job(spec, false))
    }

    fn submit_held<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.submit_job(spec, true))
    }

    fn release(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.release_job(id))
    }

    fn jobs(&self) -> BoxFuture<'_, Result<Vec<Job>>> {
        Box::pin(self.list_jobs())
    }

    fn cancel(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.cancel_job(id))
    }

    fn partitions(&self) -> BoxFuture<'_, Result<Vec<Partition>>> {
        Box::pin(self.list_partitions())
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>>> {
        Box::pin(self.list_nodes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinfo_lines_merge_per_node() {
        let text = "n1|idle+drain|gpu:a100:4|cpu*|disk swap\nn1|idle+drain|gpu:a100:4|gpu|disk swap\nn2|idle|(null)|cpu*|none\n";
        let nodes = parse_sinfo_nodes(text);
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].state, "IDLE+DRAIN");
        assert_eq!(nodes[0].partitions, vec!["cpu", "gpu"]);
        assert_eq!(nodes[0].reason, "disk swap");
        assert_eq!((nodes[1].gres.as_str(), nodes[1].reason.as_str()), ("", ""));
    }

    #[test]
    fn sbatch_args_name_secrets_but_never_carry_values() {
        let env = BTreeMap::from([
            ("PATH".to_owned(), "/bin".to_owned()),
            ("RUNNER_TOKEN".to_owned(), "s3cr3t".to_owned()),
        ]);
        let spec = JobSpec {
            name: "n".into(),
            comment: "c".into(),
            partition: "gpu".into(),
            account: None,
            qos: None,
            gres: Some("gpu:a100:1".into()),
            cpus_per_task: 1,
            memory_mb: Some(100),
            time_limit_minutes: Some(5),
            constraint: None,
            working_directory: "/tmp".into(),
            script: "#!/bin/sh\n".into(),
            environment: env.clone(),
        };
        let args = sbatch_args(&spec, &env);
        assert!(args.contains(&"--export=PATH,RUNNER_TOKEN".to_owned()));
        assert!(
            args.contains(&"--gres=gpu:a100:1".to_owned())
                && args.contains(&"--mem=100M".to_owned())
        );
        assert!(!args.iter().any(|a| a.contains("s3cr3t")));
    }
}
