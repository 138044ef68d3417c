"""SPIN (``rec_r32_gaspin_bilstm_att``) in Paddle dygraph, as PaddleOCR builds and runs it.

Written from ``shared/reference/spin-model.md`` in Paddle ops, so that it is an implementation independent
of ``spinrec`` (different author, different framework, nothing shared). Module structure, attribute names
and hence ``state_dict`` keys follow PaddleOCR (``transform``, ``backbone.ConvNet``, ``neck.encoder.encoder``,
``head``), and so do the numerics that matter:

- GA-SPIN localisation: ``BatchNorm2D(use_global_stats=True)`` everywhere in the trunk, an ordinary
  ``BatchNorm1D`` after ``stucture_fc1.13``; the 54 outputs of ``stucture_fc2`` split into 13 curve weights,
  the AIN gate logit and 20 fiducials.
- SPN: ``F.upsample`` bilinear (Paddle default ``align_corners=False``) of the sigmoid offsets, the gate
  blend, 13 fp32 power curves, Paddle ``InstanceNorm2D`` (affine), ``2 * sigmoid - 1``.
- TPS ``GridGenerator``: C, P, ``inv(Delta)`` and ``P_hat`` built in float64 NumPy on every call with the
  (W, H)-swapped lattice of ``I_r_size = (32, 100)``, cast to float32; the extra rows from ``fc`` (40 -> 6);
  ``F.grid_sample`` with Paddle's defaults (bilinear, ``align_corners=True``) and border padding.
- ResNet32 with ordinary ``BatchNorm2D``; the cascade BiLSTM neck with ``nn.LSTM(direction='bidirectional')``;
  the attention head with ``nn.LSTMCell``, recomputing ``i2h`` at every step and feeding
  ``one_hot(argmax)`` back; softmax over classes at the end (eval).

The width knobs (``backbone_out``, ``neck_hidden``, ``neck_out``, ``head_hidden``) default to the published
configuration.
"""

from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

#: Exponents of SPIN's power curves, as the reference lists them (checked against the formula below).
SPEC_BETAS = [0.03, 33.33, 0.08, 12.5, 0.16, 6.25, 0.27, 3.7, 0.43, 2.33, 0.66, 1.52, 1.0]


def cal_k(k: int = 6) -> list[float]:
    """``lower_i = round(ln(1 - i q) / ln(i q), 2)``, ``upper_i = round(1 / lower_i, 2)``, q = 0.5/(k+1); then 1."""
    out = []
    q = 0.5 / (k + 1)
    for i in range(1, k + 1):
        lower = round(math.log(1 - i * q) / math.log(i * q), 2)
        out.append(lower)
        out.append(round(1.0 / lower, 2))
    out.append(1.0)
    return out


# ------------------------------------------------------------------------------------------ transform


def _conv_bn_relu_global(cin: int, cout: int) -> list[nn.Layer]:
    return [
        nn.Conv2D(cin, cout, 3, stride=1, padding=1, bias_attr=False),
        nn.BatchNorm2D(cout, use_global_stats=True),
        nn.ReLU(),
    ]


class SPTransformerNetwork(nn.Layer):
    """PaddleOCR's ``SP_TransformerNetwork``: weighted power curves, affine instance norm, sigmoid."""

    def __init__(self, nc: int = 1, default_type: int = 6):
        super().__init__()
        self.power_list = cal_k(default_type)
        self.sigmoid = nn.Sigmoid()
        self.bn = nn.InstanceNorm2D(nc)

    def forward(self, batch_i, weights, offsets, lambda_color):
        batch_i = (batch_i + 1) * 0.5
        if offsets is not None:
            batch_i = batch_i * (1 - lambda_color) + offsets * lambda_color
        w = weights.reshape([weights.shape[0], -1, 1, 1, 1])  # [B, K, 1, 1, 1]
        powers = paddle.stack([batch_i.pow(p) for p in self.power_list], axis=1)  # [B, K, C, H, W]
        s = paddle.sum(powers * w, axis=1)
        s = self.bn(s)
        return self.sigmoid(s) * 2 - 1


class GridGenerator(nn.Layer):
    """TPS grid: ``P_hat @ (inv(Delta) @ [C'; fc(C')])``, constants rebuilt in float64 NumPy per call."""

    def __init__(self, in_channels: int = 40, num_fiducial: int = 20):
        super().__init__()
        self.eps = 1e-6
        self.F = num_fiducial
        self.fc = nn.Linear(in_channels, 6)

    def build_c(self) -> np.ndarray:
        half = self.F // 2
        xs = np.linspace(-1.0, 1.0, half)
        top = np.stack([xs, -1.0 * np.ones(half)], axis=1)
        bottom = np.stack([xs, np.ones(half)], axis=1)
        return np.concatenate([top, bottom], axis=0)  # [F, 2] float64

    def build_inv_delta(self, c: np.ndarray) -> np.ndarray:
        f = self.F
        r = np.zeros((f, f), dtype=np.float64)
        for i in range(f):
            for j in range(f):
                r[i, j] = np.linalg.norm(c[i] - c[j]) if i != j else 1.0
        hat = (r**2) * np.log(r)
        delta = np.zeros((f + 3, f + 3), dtype=np.float64)
        delta[:f, 0] = 1.0
        delta[:f, 1:3] = c
        delta[:f, 3:] = hat
        delta[f, 3:] = c[:, 0]
        delta[f + 1, 3:] = c[:, 1]
        delta[f + 2, 3:] = 1.0
        return np.linalg.inv(delta)

    def build_p(self, i_r_size) -> np.ndarray:
        # PaddleOCR unpacks I_r_size as (width, height) although GA_SPIN passes (H, W) = (32, 100).
        i_r_width, i_r_height = i_r_size
        gx = (np.arange(-i_r_width, i_r_width, 2) + 1.0) / i_r_width
        gy = (np.arange(-i_r_height, i_r_height, 2) + 1.0) / i_r_height
        p = np.zeros((i_r_height, i_r_width, 2), dtype=np.float64)
        p[:, :, 0] = gx[None, :]
        p[:, :, 1] = gy[:, None]
        return p.reshape(-1, 2)  # x varies fastest

    def build_p_hat(self, c: np.ndarray, p: np.ndarray) -> np.ndarray:
        diff = p[:, None, :] - c[None, :, :]
        d = np.sqrt((diff**2).sum(axis=2))
        rbf = d**2 * np.log(d + self.eps)
        return np.concatenate([np.ones((p.shape[0], 1)), p, rbf], axis=1)

    def forward(self, batch_c_prime, i_r_size):
        c = self.build_c()
        p = self.build_p(i_r_size)
        inv_delta = paddle.to_tensor(self.build_inv_delta(c).astype(np.float32))
        p_hat = paddle.to_tensor(self.build_p_hat(c, p).astype(np.float32))
        b = batch_c_prime.shape[0]
        ex = self.fc(batch_c_prime.reshape([b, -1])).reshape([-1, 3, 2])
        t = paddle.matmul(inv_delta, paddle.concat([batch_c_prime, ex], axis=1))
        return paddle.matmul(p_hat, t)  # [B, n_points, 2]


class GASPINTransformer(nn.Layer):
    """PaddleOCR's ``GA_SPIN_Transformer`` (offsets=True, stn=True, default_type=6)."""

    def __init__(self, in_channels: int = 1, i_r_size=(32, 100), default_type: int = 6, num_fiducial: int = 20):
        super().__init__()
        self.nc = in_channels
        self.I_r_size = tuple(i_r_size)
        self.F = num_fiducial
        self.spt_length = 2 * default_type + 1
        self.out_weight = self.spt_length + 1 + 2 * num_fiducial
        self.sp_net = SPTransformerNetwork(in_channels, default_type)
        self.spt_convnet = nn.Sequential(
            *_conv_bn_relu_global(in_channels, 32), nn.MaxPool2D(2, 2),
            *_conv_bn_relu_global(32, 64), nn.MaxPool2D(2, 2),
            *_conv_bn_relu_global(64, 128), nn.MaxPool2D(2, 2),
        )  # fmt: skip
        self.stucture_fc1 = nn.Sequential(
            *_conv_bn_relu_global(128, 256), nn.MaxPool2D(2, 2),
            *_conv_bn_relu_global(256, 256), nn.MaxPool2D(2, 2),
            *_conv_bn_relu_global(256, 512),
            nn.AdaptiveAvgPool2D(1), nn.Flatten(1), nn.Linear(512, 256), nn.BatchNorm1D(256), nn.ReLU(),
        )  # fmt: skip
        self.stucture_fc2 = nn.Linear(256, self.out_weight)
        self.GridGenerator = GridGenerator(2 * num_fiducial, num_fiducial)
        self.offset_fc1 = nn.Sequential(
            nn.Conv2D(128, 16, 3, 1, 1, bias_attr=False), nn.BatchNorm2D(16, use_global_stats=True), nn.ReLU()
        )
        self.offset_fc2 = nn.Conv2D(16, in_channels, 3, 1, 1)
        self.pool = nn.MaxPool2D(2, 2)

    def localize(self, x):
        """(curve weights [B,13], offsets [B,C,2,6] after sigmoid, gate [B], fiducials [B,F,2])."""
        feat = self.spt_convnet(x)
        v = self.stucture_fc2(self.stucture_fc1(feat))
        weights = v[:, : self.spt_length]
        gate = F.sigmoid(v[:, self.spt_length])
        offsets = F.sigmoid(self.pool(self.offset_fc2(self.offset_fc1(feat))))
        c_prime = v[:, self.spt_length + 1 :].reshape([x.shape[0], self.F, 2])
        return weights, offsets, gate, c_prime

    def forward(self, x):
        weights, offsets, gate, c_prime = self.localize(x)
        assert offsets.shape[2] == 2 and offsets.shape[3] == 6, offsets.shape
        offsets = F.upsample(offsets, size=(x.shape[2], x.shape[3]), mode="bilinear")
        grid = self.GridGenerator(c_prime, self.I_r_size)
        grid = grid.reshape([grid.shape[0], self.I_r_size[0], self.I_r_size[1], 2])
        lam = gate.reshape([-1, 1, 1, 1])
        y = self.sp_net(x, weights, offsets, lam)
        return F.grid_sample(y, grid, padding_mode="border")


# ------------------------------------------------------------------------------------------ backbone


class BasicBlock(nn.Layer):
    def __init__(self, inplanes: int, planes: int):
        super().__init__()
        self.conv1 = nn.Conv2D(inplanes, planes, 3, 1, 1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(planes)
        self.conv2 = nn.Conv2D(planes, planes, 3, 1, 1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2D(inplanes, planes, 1, 1, bias_attr=False), nn.BatchNorm2D(planes)
            )

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class ResNet(nn.Layer):
    def __init__(self, input_channel: int, output_channel: int, layers=(1, 2, 5, 3)):
        super().__init__()
        ch = [output_channel // 4, output_channel // 2, output_channel, output_channel]
        self.inplanes = output_channel // 8
        self.conv0_1 = nn.Conv2D(input_channel, output_channel // 16, 3, 1, 1, bias_attr=False)
        self.bn0_1 = nn.BatchNorm2D(output_channel // 16)
        self.conv0_2 = nn.Conv2D(output_channel // 16, self.inplanes, 3, 1, 1, bias_attr=False)
        self.bn0_2 = nn.BatchNorm2D(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool1 = nn.MaxPool2D(kernel_size=2, stride=2)
        self.layer1 = self._make_layer(ch[0], layers[0])
        self.conv1 = nn.Conv2D(ch[0], ch[0], 3, 1, 1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(ch[0])
        self.maxpool2 = nn.MaxPool2D(kernel_size=2, stride=2)
        self.layer2 = self._make_layer(ch[1], layers[1])
        self.conv2 = nn.Conv2D(ch[1], ch[1], 3, 1, 1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(ch[1])
        self.maxpool3 = nn.MaxPool2D(kernel_size=2, stride=(2, 1), padding=(0, 1))
        self.layer3 = self._make_layer(ch[2], layers[2])
        self.conv3 = nn.Conv2D(ch[2], ch[2], 3, 1, 1, bias_attr=False)
        self.bn3 = nn.BatchNorm2D(ch[2])
        self.layer4 = self._make_layer(ch[3], layers[3])
        self.conv4_1 = nn.Conv2D(ch[3], ch[3], 2, stride=(2, 1), padding=(0, 1), bias_attr=False)
        self.bn4_1 = nn.BatchNorm2D(ch[3])
        self.conv4_2 = nn.Conv2D(ch[3], ch[3], 2, stride=1, padding=0, bias_attr=False)
        self.bn4_2 = nn.BatchNorm2D(ch[3])

    def _make_layer(self, planes: int, blocks: int):
        layers = [BasicBlock(self.inplanes, planes)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn0_1(self.conv0_1(x)))
        x = self.relu(self.bn0_2(self.conv0_2(x)))
        x = self.maxpool1(x)
        x = self.layer1(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool2(x)
        x = self.layer2(x)
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.maxpool3(x)
        x = self.layer3(x)
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.layer4(x)
        x = self.relu(self.bn4_1(self.conv4_1(x)))
        x = self.relu(self.bn4_2(self.conv4_2(x)))
        return x


class ResNet32(nn.Layer):
    def __init__(self, in_channels: int = 1, out_channels: int = 512):
        super().__init__()
        self.out_channels = out_channels
        self.ConvNet = ResNet(in_channels, out_channels)

    def forward(self, x):
        return self.ConvNet(x)


# ------------------------------------------------------------------------------------------ neck


class BidirectionalLSTM(nn.Layer):
    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, num_layers=1, direction="bidirectional")
        self.linear = nn.Linear(hidden_size * 2, output_size)

    def forward(self, x):
        recurrent, _ = self.rnn(x)
        return self.linear(recurrent)


class EncoderWithCascadeRNN(nn.Layer):
    def __init__(self, in_channels: int, hidden_size: int, out_channels):
        super().__init__()
        self.out_channels = out_channels[-1]
        self.encoder = nn.LayerList(
            [
                BidirectionalLSTM(in_channels if i == 0 else out_channels[i - 1], hidden_size, out_channels[i])
                for i in range(len(out_channels))
            ]
        )

    def forward(self, x):
        for layer in self.encoder:
            x = layer(x)
        return x


class Im2Seq(nn.Layer):
    def forward(self, x):
        assert x.shape[2] == 1, x.shape
        return x.squeeze(axis=2).transpose([0, 2, 1])


class SequenceEncoder(nn.Layer):
    def __init__(self, in_channels: int = 512, hidden_size: int = 256, out_channels=(256, 512)):
        super().__init__()
        self.encoder_reshape = Im2Seq()
        self.encoder = EncoderWithCascadeRNN(in_channels, hidden_size, list(out_channels))
        self.out_channels = out_channels[-1]

    def forward(self, x):
        return self.encoder(self.encoder_reshape(x))


# ------------------------------------------------------------------------------------------ head


class AttentionLSTMCell(nn.Layer):
    def __init__(self, input_size: int, hidden_size: int, num_embeddings: int):
        super().__init__()
        self.i2h = nn.Linear(input_size, hidden_size, bias_attr=False)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias_attr=False)
        self.rnn = nn.LSTMCell(input_size + num_embeddings, hidden_size)

    def forward(self, prev_hidden, batch_h, char_onehots):
        batch_h_proj = self.i2h(batch_h)  # recomputed at every step, as PaddleOCR does
        prev_proj = self.h2h(prev_hidden[0]).unsqueeze(1)
        e = self.score(paddle.tanh(batch_h_proj + prev_proj))  # [B, T, 1]
        alpha = F.softmax(e, axis=1).transpose([0, 2, 1])  # [B, 1, T]
        context = paddle.matmul(alpha, batch_h).squeeze(1)
        out, new_state = self.rnn(paddle.concat([context, char_onehots], axis=1), prev_hidden)
        return out, new_state


class SPINAttentionHead(nn.Layer):
    def __init__(self, in_channels: int = 512, out_channels: int = 70, hidden_size: int = 256):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_classes = out_channels
        self.attention_cell = AttentionLSTMCell(in_channels, hidden_size, out_channels)
        self.generator = nn.Linear(hidden_size, out_channels)

    def forward(self, inputs, targets=None, batch_max_length: int = 25):
        b = inputs.shape[0]
        steps = batch_max_length + 1
        hidden = (paddle.zeros([b, self.hidden_size]), paddle.zeros([b, self.hidden_size]))
        if self.training:
            outs = []
            for i in range(steps):
                onehot = F.one_hot(targets[:, i], self.num_classes)
                out, hidden = self.attention_cell(hidden, inputs, onehot)
                outs.append(out.unsqueeze(1))
            return self.generator(paddle.concat(outs, axis=1))
        y = paddle.zeros([b], dtype="int64")
        logits = []
        for _ in range(steps):
            onehot = F.one_hot(y, self.num_classes)
            out, hidden = self.attention_cell(hidden, inputs, onehot)
            z = self.generator(out)
            logits.append(z.unsqueeze(1))
            y = z.argmax(axis=1)
        return F.softmax(paddle.concat(logits, axis=1), axis=2)


# ------------------------------------------------------------------------------------------ model


class SPINPaddle(nn.Layer):
    """The whole recognizer; ``state_dict()`` keys are PaddleOCR's."""

    def __init__(
        self,
        in_channels: int = 1,
        backbone_out: int = 512,
        neck_hidden: int = 256,
        neck_out=(256, 512),
        head_hidden: int = 256,
        num_classes: int = 70,
    ):
        super().__init__()
        self.transform = GASPINTransformer(in_channels)
        self.backbone = ResNet32(in_channels, backbone_out)
        self.neck = SequenceEncoder(backbone_out, neck_hidden, neck_out)
        self.head = SPINAttentionHead(neck_out[-1], num_classes, head_hidden)

    def forward(self, x):
        return self.head(self.neck(self.backbone(self.transform(x))))


def randomize_(
    model: SPINPaddle, seed: int, generator_scale: float = 8.0, fiducial_scale: float = 0.02, conv_gain: float = 1.0, seq_gain: float = 1.0,
    curve_weights: str = "positive",
) -> None:
    """Give every parameter and BatchNorm statistic a non-trivial random value (in place).

    Conv weights He-normal; BN weight in [0.5, 1.5], bias N(0, 0.1), ``_mean`` N(0, 0.1), ``_variance`` in
    [0.5, 2] (positive); Linear / LSTM weights uniform in +-1/sqrt(fan_in); ``GridGenerator.fc`` small but
    non-zero; ``stucture_fc2`` around PaddleOCR's initial bias with weights ``fiducial_scale`` so the
    fiducials move and the AIN gate is open; ``generator`` weights scaled by ``generator_scale`` so the
    greedy argmax is clear (no near-ties).

    ``curve_weights``: "positive" gives the 13 power curves biases in [0.1, 1] (a monotone intensity curve);
    "normal" draws them from N(0, 1), which often makes the curves cancel so that the instance norm divides
    by a tiny spread and amplifies fp32 rounding (in PaddleOCR as in any port).
    """
    rng = np.random.RandomState(seed)
    norms = {
        n for n, layer in model.named_sublayers() if isinstance(layer, (nn.BatchNorm2D, nn.BatchNorm1D, nn.InstanceNorm2D))
    }
    done = set()
    for name, p in model.named_parameters():
        if id(p) in done:  # LSTM per-cell aliases are the same tensors
            continue
        done.add(id(p))
        shape = tuple(p.shape)
        leaf = name.rsplit(".", 1)[-1]
        if name.startswith("transform.stucture_fc2."):
            if leaf == "weight":
                v = rng.normal(0.0, fiducial_scale, shape)
            else:  # 13 curve weights, the gate logit, then PaddleOCR's initial fiducials, all perturbed
                half = (shape[0] - 14) // 4
                xs = np.linspace(-1.0, 1.0, half)
                top = np.stack([xs, np.linspace(0.0, -1.0, half)], axis=1)
                bottom = np.stack([xs, np.linspace(1.0, 0.0, half)], axis=1)
                curves = rng.uniform(0.1, 1.0, 13) if curve_weights == "positive" else rng.normal(0.0, 1.0, 13)
                v = np.concatenate([curves, rng.normal(0.0, 1.0, 1), np.concatenate([top, bottom]).reshape(-1)])
                v[14:] += rng.normal(0.0, 0.1, shape[0] - 14)
        elif name.startswith("transform.GridGenerator.fc."):
            v = rng.normal(0.0, 0.01, shape)
        elif leaf == "_variance":
            v = rng.uniform(0.5, 2.0, shape)
        elif leaf == "_mean":
            v = rng.normal(0.0, 0.1, shape)
        elif name.rsplit(".", 1)[0] in norms:  # BatchNorm / InstanceNorm scale ("weight" / "scale") and bias
            v = rng.uniform(0.5, 1.5, shape) if leaf in ("weight", "scale") else rng.normal(0.0, 0.1, shape)
        elif len(shape) == 4:  # conv weight [out, in, kh, kw]
            fan_in = shape[1] * shape[2] * shape[3]
            v = rng.normal(0.0, conv_gain * math.sqrt(2.0 / fan_in), shape)
        elif len(shape) == 2:
            if ".rnn." in name:  # LSTM / LSTMCell [4H, in]
                bound = 1.0 / math.sqrt(shape[0] // 4)
            else:  # Linear, stored [in, out]
                bound = 1.0 / math.sqrt(shape[0])
            v = rng.uniform(-bound, bound, shape)
            if name.startswith("head.generator."):
                v = v * generator_scale
            elif name.startswith(("neck.", "head.")):
                v = v * seq_gain
        elif name == "head.generator.bias":  # class preferences, so that different images read differently
            v = rng.normal(0.0, 1.0, shape)
        else:  # remaining biases (conv, Linear, LSTM)
            v = rng.uniform(-0.1, 0.1, shape)
        p.set_value(v.astype(np.float32))

