"""The ROCA fingerprint (CVE-2017-15361): RSA moduli whose private key can be computed.

Infineon's RSALib made primes of the form k * M + (65537^a mod M), M the product of the primes
up to 167, so such a modulus n lies, modulo M, in the subgroup that 65537 generates in the
multiplicative group mod M. A random modulus lands there with probability about 2^-154.
No maintained Python library tests for it (`cryptography` and joserfc do not; the authors'
`roca-detect` was last released in 2018 with a dozen dependencies), and the test is small:
membership is decided one prime-power part of the subgroup's order at a time
(Pohlig-Hellman), as the authors' detector does. About 50 µs per new key, at JWKS import.
"""

from __future__ import annotations

import math

_GENERATOR = 65537
_PRIMES = tuple(p for p in range(2, 168) if all(p % d for d in range(2, math.isqrt(p) + 1)))
_M = math.prod(_PRIMES)


def _order(g: int, p: int) -> int:
    k, x = 1, g % p
    while x != 1:
        x, k = x * g % p, k + 1
    return k


# The order of 65537 mod M, and for each prime power q^e dividing it the powers of
# 65537^(order / q^e): a modulus's image under the same exponent must be one of them.
_ORDER = math.lcm(*(_order(_GENERATOR, p) for p in _PRIMES))


def _prime_powers(n: int) -> list[int]:
    powers = []
    for q in _PRIMES:
        if n % q == 0:
            power = 1
            while n % q == 0:
                n, power = n // q, power * q
            powers.append(power)
    assert n == 1  # the order divides the product of (p - 1), whose factors are all below 167
    return powers


_PARTS: tuple[tuple[int, frozenset[int]], ...] = tuple(
    (_ORDER // power, frozenset(pow(_GENERATOR, (_ORDER // power) * i, _M) for i in range(power)))
    for power in _prime_powers(_ORDER)
)


def has_roca_fingerprint(modulus: int) -> bool:
    """True when `modulus` has the structure of a ROCA-vulnerable RSA key."""
    residue = modulus % _M
    if pow(residue, _ORDER, _M) != 1:
        return False
    return all(pow(residue, exponent, _M) in powers for exponent, powers in _PARTS)
