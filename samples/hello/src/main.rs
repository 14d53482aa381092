//! `hello`: prints the identity the kernel gave this container, logs one
//! structured line, and exits 0.

fn main() {
    let me = forgeone_guest::identity();
    println!("hello from container {}", me.container_id);
    println!("  tenant    {}", me.tenant);
    println!("  principal {}", me.principal);
    println!("  trust     {}", me.trust);
    println!("  workload  {}", me.workload.as_deref().unwrap_or("-"));
    println!("  component {}", me.component_digest);
    println!("  signed by {}", if me.signers.is_empty() { "-".to_string() } else { me.signers.join(", ") });
    forgeone_guest::log::info!("hello sample greeted {} args", std::env::args().count());
}
