pub const CONVERGED: u8 = 0;
pub const NOT_CONVERGED: u8 = 1;
pub const COULD_NOT_START: u8 = 2;
pub const GUARD_REFUSED: u8 = 3;
pub const UPSTREAM_REFUSED: u8 = 4;
