"""WeChat's and WeCom's HTTP APIs: the calls, their errcodes and verdicts, the rate gate."""
