module localmodel.test/peers/fake-llama-server

go 1.26.0
