//! Print the simulated site's day, hour by hour (`cargo run -p vedirect --example sim_day`).
use vedirect::sim::Site;

fn main() {
    let day = Site::default().day_profile();
    println!("hour  soc%   V      Ibat    Ichg   PV W  avail W  load W  state  yield kWh");
    for (m, s) in day.iter().enumerate().step_by(60) {
        println!(
            "{:>4}  {:>5.1}  {:>5.2}  {:>6.2}  {:>5.2}  {:>5.0}  {:>7.0}  {:>6.0}  {:?}  {:.2}",
            m / 60,
            s.soc * 100.0,
            s.battery_voltage,
            s.battery_current,
            s.charger_current,
            s.pv_power,
            s.pv_available,
            s.load_w,
            s.charge,
            s.yield_today_kwh
        );
    }
}
