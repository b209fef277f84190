use super::*;

struct Name;
impl OnBackend for Name {
    type Output = String;
    fn run<B: Backend>(self) -> Result<String> {
        Ok(B::name(&Default::default()))
    }
}

#[test]
fn cpu_runs_on_flex() {
    assert!(
        run_on(Device::Cpu, Name)
            .unwrap()
            .to_lowercase()
            .contains("flex")
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_build_it() {
    let e = run_on(Device::Cuda, Name).unwrap_err().to_string();
    assert!(e.contains("--features cuda"), "{e}");
}
