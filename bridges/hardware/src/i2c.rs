//! The I2C bus, as embedded-hal 1.0's `I2c` trait: the Linux i2c-dev device
//! through linux-embedded-hal (one I2C_RDWR ioctl per transaction, so a
//! write-then-read is a true repeated start), rppal's I2C on a Raspberry Pi,
//! and a simulated bus on which device models answer at their address (the LCD
//! plate's MCP23017, for one).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use embedded_hal::i2c::{ErrorType, I2c, Operation};

use crate::HardwareError;

/// An I2C bus, real or simulated.
pub enum I2cBus {
    #[cfg(feature = "i2cdev")]
    Linux(linux_embedded_hal::I2cdev),
    #[cfg(feature = "rppal")]
    Rppal(rppal::i2c::I2c),
    Sim(SimI2cBus),
}

impl I2cBus {
    /// Opens /dev/i2c-`bus` through the Linux i2c-dev interface, on any board
    /// (bus 1 is the one on pins 3 and 5 of every Pi but the very first).
    #[cfg(feature = "i2cdev")]
    pub fn linux(bus: u8) -> Result<Self, HardwareError> {
        let path = format!("/dev/i2c-{bus}");
        linux_embedded_hal::I2cdev::new(&path)
            .map(I2cBus::Linux)
            .map_err(|error| HardwareError::I2c(format!("{path}: {error}")))
    }

    /// Opens I2C bus `bus` through rppal.
    #[cfg(feature = "rppal")]
    pub fn rppal(bus: u8) -> Result<Self, HardwareError> {
        rppal::i2c::I2c::with_bus(bus)
            .map(I2cBus::Rppal)
            .map_err(|error| HardwareError::I2c(format!("/dev/i2c-{bus}: {error}")))
    }
}

impl ErrorType for I2cBus {
    type Error = HardwareError;
}

impl I2c for I2cBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), HardwareError> {
        match self {
            #[cfg(feature = "i2cdev")]
            I2cBus::Linux(bus) => bus
                .transaction(address, operations)
                .map_err(|error| HardwareError::I2c(format!("device 0x{address:02x}: {error}"))),
            #[cfg(feature = "rppal")]
            I2cBus::Rppal(bus) => bus
                .transaction(address, operations)
                .map_err(|error| HardwareError::I2c(format!("device 0x{address:02x}: {error}"))),
            I2cBus::Sim(bus) => bus.transaction(address, operations),
        }
    }
}

/// A device model on the simulated bus: it sees the bytes the real chip would.
pub trait I2cDeviceModel: Send {
    /// The host wrote `bytes` (one write operation of a transaction).
    fn write(&mut self, bytes: &[u8]);
    /// The host reads `buffer.len()` bytes.
    fn read(&mut self, buffer: &mut [u8]);
    /// The transaction ended (STOP condition).
    fn stop(&mut self) {}
}

/// A simulated I2C bus. Cheap to clone: a test keeps a clone to attach models,
/// the driver owns another inside an [`I2cBus::Sim`].
#[derive(Clone, Default)]
pub struct SimI2cBus {
    devices: Arc<Mutex<BTreeMap<u8, Box<dyn I2cDeviceModel>>>>,
}

impl SimI2cBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `model` on the bus at 7-bit `address` (replacing any device there).
    pub fn attach(&self, address: u8, model: Box<dyn I2cDeviceModel>) {
        self.lock().insert(address, model);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u8, Box<dyn I2cDeviceModel>>> {
        self.devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ErrorType for SimI2cBus {
    type Error = HardwareError;
}

impl I2c for SimI2cBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), HardwareError> {
        let mut devices = self.lock();
        let device = devices
            .get_mut(&address)
            .ok_or(HardwareError::I2cNoDevice { address })?;
        for operation in operations {
            match operation {
                Operation::Write(bytes) => device.write(bytes),
                Operation::Read(buffer) => device.read(buffer),
            }
        }
        device.stop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register file with an auto-incrementing pointer, the way MCP23017 and
    /// most I2C chips address their registers.
    struct Registers {
        pointer: usize,
        registers: [u8; 8],
    }

    impl I2cDeviceModel for Registers {
        fn write(&mut self, bytes: &[u8]) {
            if let Some((first, data)) = bytes.split_first() {
                self.pointer = usize::from(*first);
                for byte in data {
                    self.registers[self.pointer % 8] = *byte;
                    self.pointer += 1;
                }
            }
        }
        fn read(&mut self, buffer: &mut [u8]) {
            for byte in buffer {
                *byte = self.registers[self.pointer % 8];
                self.pointer += 1;
            }
        }
    }

    #[test]
    fn a_model_at_its_address_answers_writes_and_reads() {
        let sim = SimI2cBus::new();
        sim.attach(
            0x20,
            Box::new(Registers {
                pointer: 0,
                registers: [0; 8],
            }),
        );
        let mut bus = I2cBus::Sim(sim.clone());
        bus.write(0x20, &[0x02, 0xAB, 0xCD]).unwrap();
        let mut read = [0u8; 2];
        bus.write_read(0x20, &[0x02], &mut read).unwrap();
        assert_eq!(read, [0xAB, 0xCD]);
    }

    #[test]
    fn an_empty_address_is_a_nack() {
        let mut bus = I2cBus::Sim(SimI2cBus::new());
        let error = bus.write(0x27, &[0]).unwrap_err();
        assert!(matches!(
            error,
            HardwareError::I2cNoDevice { address: 0x27 }
        ));
        assert_eq!(error.to_string(), "I2C device 0x27 did not answer");
    }

    #[cfg(all(feature = "i2cdev", feature = "rppal"))]
    #[test]
    fn a_missing_bus_names_its_device_file_with_either_backend() {
        for opened in [I2cBus::linux(250), I2cBus::rppal(250)] {
            let Err(error) = opened else {
                panic!("/dev/i2c-250 should not exist here");
            };
            assert!(error.to_string().contains("/dev/i2c-250"), "{error}");
        }
    }
}
