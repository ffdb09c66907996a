//! Configs with extra sections (Modbus) and the shipped profiles.

#[allow(unused_imports)]
use super::*;

/// Writes this test's config followed by `extra` TOML (e.g. `[modbus]`, Modbus
/// `[[devices]]`) and returns its path.
pub fn write_config_with(env: &TestEnv, extra: &str) -> PathBuf {
    let path = env.dir().join("gateway.toml");
    std::fs::write(&path, format!("{}\n{extra}", env.config_toml())).expect("write config");
    path
}

/// Starts the gateway on [`write_config_with`]`(env, extra)`.
pub fn start_gateway_with(env: &TestEnv, extra: &str) -> Gateway {
    let config = write_config_with(env, extra);
    Gateway::start(&config, &env.data_dir(), &env.log_path())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tail(&env.log_path(), 60)))
}

/// The shipped profile files (`config/profiles/*.toml`), absolute, sorted.
pub fn shipped_profile_files() -> Vec<PathBuf> {
    let dir = workspace_root().join("config").join("profiles");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}
