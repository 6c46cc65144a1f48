# Build: the local NuGet feed is produced the same way build.sh does it (see docs/adr/0001-local-package-feed.md).
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
RUN apt-get update -qq && apt-get install -y -qq zip unzip curl >/dev/null
WORKDIR /src
COPY . .
RUN ./build.sh publish /app

FROM mcr.microsoft.com/dotnet/aspnet:10.0
WORKDIR /app
COPY --from=build /app .
EXPOSE 5080
ENTRYPOINT ["dotnet", "ModularChat.Host.dll"]
