"""The torch peer's LSTM-AE, one definition for the benchmarks that time it.

``throughput.py`` (training and scoring) and ``scoring.py`` (the scoring pass's model)
both time this module: encoder ``LSTM(64)``, its last hidden state repeated T times,
decoder ``LSTM(32)``, a per-step ``Linear`` back to F, as the project's reference model.
No absl flags here, so either script can import it.
"""

from __future__ import annotations

ENC, DEC = 64, 32


def autoencoder(torch, features: int, enc: int = ENC, dec: int = DEC):
    """A fresh ``torch.nn.Module`` of the reference LSTM-AE for ``features`` inputs."""

    class AE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.LSTM(features, enc, batch_first=True)
            self.dec = torch.nn.LSTM(enc, dec, batch_first=True)
            self.out = torch.nn.Linear(dec, features)

        def forward(self, x):
            _, (h, _) = self.enc(x)
            return self.out(self.dec(h[-1][:, None].expand(-1, x.shape[1], -1))[0])

    return AE()
